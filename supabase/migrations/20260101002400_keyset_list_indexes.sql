-- Every listing is keyset-paged now (the SDK's `SyncPage` / `AsyncPage`): ORDER BY (sort column desc, id
-- desc), and a page after the first adds `(sort column, id) < (the last row's values)`. The list indexes
-- of 20260101002200_list_indexes.sql ended at the sort column for runs, outputs, posts, receipts and
-- charges, so the id tie-breaker put a sort above each of those scans (an Incremental Sort; in generic
-- plans often a Sort of all the user's rows: 92 of the 136 Postgres-backend plans of tests/test_list_plans.py), and
-- a later page's keyset could bound the scan only by the sort column. Each index below is re-created
-- under its own name with `id desc` last: its old definition is a prefix of the new one, so it goes.
--
--   list                                              order                         index
--   executions.list (a user's; RLS or user_id)        started_at desc, id desc      idx_executions_user_started
--   executions.list (status)                          started_at desc, id desc      idx_executions_user_status_started
--   executions.list (service role, every user)        started_at desc, id desc      idx_executions_started
--   outputs.list (a user's; RLS or user_id)           created_at desc, id desc      idx_outputs_user_created
--   outputs.list (format)                             created_at desc, id desc      idx_outputs_user_format_created
--   outputs.list (execution_id)                       created_at desc, id desc      idx_outputs_execution
--   outputs.list (service role, every user)           created_at desc, id desc      idx_outputs_created
--   blog_posts.list (user_id)                         created_at desc, id desc      idx_blog_posts_user_created
--   blog_posts.list (own and public; anon; every)     created_at desc, id desc      idx_blog_posts_created
--   blog_posts.list_public                            published_at desc, id desc    idx_blog_posts_public
--   credits.history                                   created_at desc, id desc      idx_payment_receipts_user_created
--   credits.charges                                   created_at desc, id desc      idx_credit_charges_user_created
--
-- The ideas' indexes already end with id desc (20260101002200) and stay. idx_outputs_execution still
-- starts with (execution_id, user_id), the columns of the outputs -> executions foreign key; so the service
-- role's listing of one run's outputs without a user_id sorts what it finds: a run's output or few.
-- tests/test_list_plans.py proves every plan (custom and generic, the first page and a later one, the
-- later one through both backends' keyset filters), and supabase/tests/05_list_indexes.test.sql pins the
-- definitions.

-- executions --------------------------------------------------------------------------------------------------
drop index public.idx_executions_user_started;
create index idx_executions_user_started on public.executions (user_id, started_at desc, id desc);
drop index public.idx_executions_user_status_started;
create index idx_executions_user_status_started on public.executions (user_id, status, started_at desc, id desc);
drop index public.idx_executions_started;
create index idx_executions_started on public.executions (started_at desc, id desc);

-- outputs -------------------------------------------------------------------------------------------------------
drop index public.idx_outputs_user_created;
create index idx_outputs_user_created on public.outputs (user_id, created_at desc, id desc);
drop index public.idx_outputs_user_format_created;
create index idx_outputs_user_format_created on public.outputs (user_id, format, created_at desc, id desc);
drop index public.idx_outputs_execution;
create index idx_outputs_execution on public.outputs (execution_id, user_id, created_at desc, id desc);
drop index public.idx_outputs_created;
create index idx_outputs_created on public.outputs (created_at desc, id desc);

-- blog_posts ----------------------------------------------------------------------------------------------------
drop index public.idx_blog_posts_user_created;
create index idx_blog_posts_user_created on public.blog_posts (user_id, created_at desc, id desc);
drop index public.idx_blog_posts_created;
create index idx_blog_posts_created on public.blog_posts (created_at desc, id desc);
drop index public.idx_blog_posts_public;
create index idx_blog_posts_public on public.blog_posts (is_public, published_at desc, id desc);

-- payment_receipts, credit_charges -----------------------------------------------------------------------------
drop index public.idx_payment_receipts_user_created;
create index idx_payment_receipts_user_created on public.payment_receipts (user_id, created_at desc, id desc);
drop index public.idx_credit_charges_user_created;
create index idx_credit_charges_user_created on public.credit_charges (user_id, created_at desc, id desc);
