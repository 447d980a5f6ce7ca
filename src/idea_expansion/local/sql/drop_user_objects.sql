-- What `supabase db reset --db-url` removes before re-applying migrations: everything the migrations
-- made in public (functions, views, tables, sequences, types), the `private` schema of internal
-- helpers, every RLS policy (storage.objects
-- included, since migrations create those too), non-default extensions, and the rows of the auth and
-- migration-history tables. Roles, the auth/storage/extensions schemas and bucket rows stay.
do $drop$
declare
  rec record;
begin
  for rec in
    select e.extname from pg_catalog.pg_extension e
     where e.extname not in ('plpgsql', 'pgcrypto', 'uuid-ossp', 'pg_graphql', 'pg_net',
                             'pg_stat_statements', 'pgjwt', 'pgsodium', 'supabase_vault')
  loop
    execute pg_catalog.format('drop extension if exists %I cascade', rec.extname);
  end loop;

  drop schema if exists private cascade;

  -- Names are captured as text: an object dropped by an earlier cascade must not turn into a bare OID.
  for rec in
    select pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
             as signature
      from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'
  loop
    execute pg_catalog.format('drop routine if exists %s cascade', rec.signature);
  end loop;

  for rec in
    select pg_catalog.format('%I.%I', n.nspname, c.relname) as relation, c.relkind
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('v', 'm', 'r', 'p', 'f', 'S')
     order by case c.relkind when 'v' then 0 when 'm' then 1 when 'S' then 3 else 2 end
  loop
    execute pg_catalog.format(
      case rec.relkind
        when 'v' then 'drop view if exists %s cascade'
        when 'm' then 'drop materialized view if exists %s cascade'
        when 'S' then 'drop sequence if exists %s cascade'
        when 'f' then 'drop foreign table if exists %s cascade'
        else 'drop table if exists %s cascade'
      end, rec.relation);
  end loop;

  for rec in
    select pg_catalog.format('%I.%I', n.nspname, t.typname) as type_name
      from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
     where n.nspname = 'public'
       and t.typtype in ('e', 'c', 'd', 'r')
       and not exists (select 1 from pg_catalog.pg_class c where c.oid = t.typrelid and c.relkind <> 'c')
  loop
    execute pg_catalog.format('drop type if exists %s cascade', rec.type_name);
  end loop;

  for rec in select p.policyname, p.schemaname, p.tablename from pg_catalog.pg_policies p loop
    execute pg_catalog.format('drop policy if exists %I on %I.%I', rec.policyname, rec.schemaname, rec.tablename);
  end loop;

  for rec in
    select pg_catalog.format('%I.%I', n.nspname, c.relname) as relation
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where c.relkind = 'r'
       and ((n.nspname = 'auth' and c.relname <> 'schema_migrations') or n.nspname = 'supabase_migrations')
  loop
    execute pg_catalog.format('truncate %s cascade', rec.relation);
  end loop;
end
$drop$;
