-- Live progress: public.executions and public.outputs join the supabase_realtime publication, so a
-- Supabase client can watch a run (`postgres_changes` on the run's row) instead of polling its status.
--
-- Where the publication does not exist (plain PostgreSQL, the embedded server, a bootstrapped local
-- database) there is no Supabase Realtime to feed, and nothing is done: the migration applies everywhere.
-- It is idempotent: a table already in the publication (added by hand, by an earlier run of this file, or
-- covered by a publication FOR ALL TABLES / FOR TABLES IN SCHEMA public) is not added again, so applying it
-- twice or `supabase db reset` never errors. `db reset` drops the tables, which takes them out of the
-- publication; re-applying this file puts them back. `idea-expansion db doctor` checks the result.
--
-- Who sees what: Supabase Realtime delivers a postgres_changes event to a subscriber only if the row
-- passes that subscriber's RLS SELECT policies, evaluated as their role with their JWT claims. The only
-- SELECT policies on these tables are "Users can view their own executions" / "Users can view their own
-- outputs" (`to authenticated using ((select auth.uid()) = user_id)`, see 20260101000600_executions.sql and
-- 20260101000700_outputs.sql), and anon has no SELECT grant: a user receives the INSERTs and UPDATEs of
-- their own runs and outputs only, the same rows PostgREST would show them.
--
-- Replica identity stays DEFAULT (the primary key). INSERT and UPDATE events carry the whole new row
-- either way, and the new row (status, stage, completed_at) is what a watcher needs. FULL would add the
-- old row's values to UPDATE events at the cost of logging every column of every update, and on an
-- RLS-enabled table Supabase sends only the primary key of the old record anyway. Realtime cannot apply
-- RLS to DELETE events (the row is gone), so every subscriber to a table gets its deletes: with DEFAULT
-- identity such an event holds nothing but the deleted row's random uuid, never its owner or content.

do $realtime$
declare
  v_all_tables boolean;
  v_table text;
begin
  select p.puballtables into v_all_tables
    from pg_catalog.pg_publication p
   where p.pubname = 'supabase_realtime';
  if not found then
    return;  -- not a Supabase database: no Realtime to publish to
  end if;
  if v_all_tables then
    return;  -- FOR ALL TABLES already publishes every table, these included
  end if;
  foreach v_table in array array['executions', 'outputs'] loop
    if not exists (
      select 1 from pg_catalog.pg_publication_tables t
       where t.pubname = 'supabase_realtime' and t.schemaname = 'public' and t.tablename = v_table
    ) then
      execute pg_catalog.format('alter publication supabase_realtime add table %I.%I', 'public', v_table);
    end if;
  end loop;
end
$realtime$;
