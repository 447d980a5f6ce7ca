-- Grants: who may execute which function, and who may write which table.
begin;
create extension if not exists pgtap with schema extensions;
-- The first migration revokes PUBLIC's default EXECUTE on new functions; pgTAP's must stay callable
-- while these tests act as anon, authenticated or service_role (rolled back with everything else).
grant execute on all functions in schema extensions to public;
set local search_path = extensions, public;
select plan(20);

select function_privs_are('public', 'check_user_has_credits', array['uuid'], 'anon', array[]::text[]);
select function_privs_are('public', 'check_user_has_credits', array['uuid'], 'authenticated', array['EXECUTE']);
select function_privs_are('public', 'check_user_has_credits', array['uuid'], 'service_role', array['EXECUTE']);

select function_privs_are('public', 'consume_expansion_credit', array['uuid', 'uuid'], 'anon', array[]::text[]);
select function_privs_are('public', 'consume_expansion_credit', array['uuid', 'uuid'], 'authenticated', array[]::text[]);
select function_privs_are('public', 'consume_expansion_credit', array['uuid', 'uuid'], 'service_role', array['EXECUTE']);

select function_privs_are('public', 'add_paid_credits',
  array['uuid', 'integer', 'numeric', 'text', 'text', 'text'], 'anon', array[]::text[]);
select function_privs_are('public', 'add_paid_credits',
  array['uuid', 'integer', 'numeric', 'text', 'text', 'text'], 'authenticated', array[]::text[]);
select function_privs_are('public', 'add_paid_credits',
  array['uuid', 'integer', 'numeric', 'text', 'text', 'text'], 'service_role', array['EXECUTE']);

select is(
  (select array_agg(p.proname::text order by p.proname) from pg_proc p
    where p.pronamespace = 'public'::regnamespace
      and has_function_privilege('public', p.oid, 'EXECUTE')),
  null,
  'PUBLIC may execute no function in public'
);
select is(
  (select array_agg(p.proname::text order by p.proname) from pg_proc p
    where p.pronamespace = 'public'::regnamespace
      and coalesce(p.proconfig, '{}') <> array['search_path=""']),
  null,
  'every function pins search_path to empty'
);
select is(
  (select array_agg(p.proname::text order by p.proname) from pg_proc p
    where p.pronamespace = 'public'::regnamespace and p.prosecdef),
  array['handle_auth_user_change'],
  'only the auth.users sync trigger is security definer'
);

select table_privs_are('public', 'usage_tracking', 'authenticated', array['SELECT']);
select table_privs_are('public', 'payment_receipts', 'authenticated', array['SELECT']);
select table_privs_are('public', 'executions', 'authenticated', array['SELECT']);
select table_privs_are('public', 'outputs', 'authenticated', array['SELECT']);
select table_privs_are('public', 'credit_charges', 'authenticated', array['SELECT']);
select table_privs_are('public', 'usage_tracking', 'anon', array[]::text[]);
select table_privs_are('public', 'blog_posts', 'anon', array['SELECT']);
select table_privs_are('public', 'usage_tracking', 'service_role',
  array['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE']);

select * from finish();
rollback;
