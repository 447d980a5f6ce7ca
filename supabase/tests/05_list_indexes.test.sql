-- The indexes the SDK's listings are served by (20260101002200_list_indexes.sql, then
-- 20260101002400_keyset_list_indexes.sql): each is (user_id [, the list's filter], the list's order, id),
-- the order of a keyset page being (sort column desc, id desc); the tables hold exactly these indexes, and
-- none is made redundant by another (tests/test_list_plans.py proves the plans on a generated data set).
-- A keyset page needs a sort column without NULLs: every listing's is NOT NULL, or (published_at) never
-- NULL on the rows its listing reads (20260101002500_public_posts_published_at.sql).
begin;
create extension if not exists pgtap with schema extensions;
-- The first migration revokes PUBLIC's default EXECUTE on new functions; pgTAP's must stay callable.
grant execute on all functions in schema extensions to public;
set local search_path = extensions, public;
select plan(33);

select indexes_are('public', 'ideas',
  array['ideas_pkey', 'ideas_id_user_id_key', 'idx_ideas_user_created', 'idx_ideas_user_priority',
        'idx_ideas_user_status', 'idx_ideas_user_status_priority', 'idx_ideas_created', 'idx_ideas_priority']);
select indexes_are('public', 'executions',
  array['executions_pkey', 'executions_id_user_id_key', 'executions_user_id_idempotency_key_key',
        'executions_one_in_flight_per_idea', 'idx_executions_queued', 'idx_executions_running_heartbeat',
        'idx_executions_started',
        'idx_executions_selected_idea', 'idx_executions_status', 'idx_executions_user_started',
        'idx_executions_user_status_started']);
select indexes_are('public', 'outputs',
  array['outputs_pkey', 'outputs_id_user_id_key', 'idx_outputs_execution', 'idx_outputs_format',
        'idx_outputs_idea', 'idx_outputs_user_created', 'idx_outputs_user_format_created', 'idx_outputs_created']);
select indexes_are('public', 'blog_posts',
  array['blog_posts_pkey', 'blog_posts_output_id_key', 'blog_posts_user_id_slug_key', 'idx_blog_posts_output',
        'idx_blog_posts_public', 'idx_blog_posts_user_created', 'idx_blog_posts_created']);
select indexes_are('public', 'payment_receipts',
  array['payment_receipts_pkey', 'payment_receipts_bmc_reference_key', 'idx_payment_receipts_user_created']);
select indexes_are('public', 'credit_charges',
  array['credit_charges_pkey', 'credit_charges_user_id_idempotency_key_key', 'idx_credit_charges_user_created']);

-- Column order and direction matter (an index in the wrong direction or order would need a sort).
select is(pg_get_indexdef('public.idx_ideas_user_created'::regclass),
  'CREATE INDEX idx_ideas_user_created ON public.ideas USING btree (user_id, created_at DESC, id DESC)',
  'ideas: a user''s newest first');
select is(pg_get_indexdef('public.idx_ideas_user_priority'::regclass),
  'CREATE INDEX idx_ideas_user_priority ON public.ideas USING btree (user_id, priority_score DESC, id DESC)',
  'ideas: a user''s highest priority first');
select is(pg_get_indexdef('public.idx_ideas_user_status'::regclass),
  'CREATE INDEX idx_ideas_user_status ON public.ideas USING btree (user_id, status, created_at DESC, id DESC)',
  'ideas: a user''s newest first, of one status');
select is(pg_get_indexdef('public.idx_ideas_user_status_priority'::regclass),
  'CREATE INDEX idx_ideas_user_status_priority ON public.ideas USING btree (user_id, status, priority_score DESC, id DESC)',
  'ideas: a user''s highest priority first, of one status');
select is(pg_get_indexdef('public.idx_ideas_created'::regclass),
  'CREATE INDEX idx_ideas_created ON public.ideas USING btree (created_at DESC, id DESC)',
  'ideas: everyone''s newest first (service role)');
select is(pg_get_indexdef('public.idx_ideas_priority'::regclass),
  'CREATE INDEX idx_ideas_priority ON public.ideas USING btree (priority_score DESC, id DESC)',
  'ideas: everyone''s highest priority first (service role)');
select is(pg_get_indexdef('public.idx_executions_user_started'::regclass),
  'CREATE INDEX idx_executions_user_started ON public.executions USING btree (user_id, started_at DESC, id DESC)',
  'executions: a user''s newest first');
select is(pg_get_indexdef('public.idx_executions_user_status_started'::regclass),
  'CREATE INDEX idx_executions_user_status_started ON public.executions USING btree (user_id, status, started_at DESC, id DESC)',
  'executions: a user''s newest first, of one status');
select is(pg_get_indexdef('public.idx_executions_started'::regclass),
  'CREATE INDEX idx_executions_started ON public.executions USING btree (started_at DESC, id DESC)',
  'every user''s runs, newest first (the service role''s listing)');
select is(pg_get_indexdef('public.idx_outputs_user_created'::regclass),
  'CREATE INDEX idx_outputs_user_created ON public.outputs USING btree (user_id, created_at DESC, id DESC)',
  'outputs: a user''s newest first');
select is(pg_get_indexdef('public.idx_outputs_created'::regclass),
  'CREATE INDEX idx_outputs_created ON public.outputs USING btree (created_at DESC, id DESC)',
  'every user''s outputs, newest first (the service role''s listing)');
select is(pg_get_indexdef('public.idx_outputs_user_format_created'::regclass),
  'CREATE INDEX idx_outputs_user_format_created ON public.outputs USING btree (user_id, format, created_at DESC, id DESC)',
  'outputs: a user''s newest first, of one format');
select is(pg_get_indexdef('public.idx_outputs_execution'::regclass),
  'CREATE INDEX idx_outputs_execution ON public.outputs USING btree (execution_id, user_id, created_at DESC, id DESC)',
  'outputs: a run''s newest first (and the (execution_id, user_id) foreign key)');
select is(pg_get_indexdef('public.idx_blog_posts_user_created'::regclass),
  'CREATE INDEX idx_blog_posts_user_created ON public.blog_posts USING btree (user_id, created_at DESC, id DESC)',
  'blog posts: a user''s newest first');
select is(pg_get_indexdef('public.idx_blog_posts_created'::regclass),
  'CREATE INDEX idx_blog_posts_created ON public.blog_posts USING btree (created_at DESC, id DESC)',
  'blog posts: the newest visible first (own and public, or anon''s public)');
select is(pg_get_indexdef('public.idx_blog_posts_public'::regclass),
  'CREATE INDEX idx_blog_posts_public ON public.blog_posts USING btree (is_public, published_at DESC, id DESC)',
  'blog posts: the newest published public posts first (not partial: the SDK sends is_public as a parameter)');
select is(pg_get_indexdef('public.idx_payment_receipts_user_created'::regclass),
  'CREATE INDEX idx_payment_receipts_user_created ON public.payment_receipts USING btree (user_id, created_at DESC, id DESC)',
  'payment receipts: a user''s newest first');
select is(pg_get_indexdef('public.idx_credit_charges_user_created'::regclass),
  'CREATE INDEX idx_credit_charges_user_created ON public.credit_charges USING btree (user_id, created_at DESC, id DESC)',
  'credit charges: a user''s newest first');

-- Every listing's sort column has a value on every row it pages through.
select col_not_null('public', 'ideas', 'created_at', 'ideas.list sorts by created_at');
select col_not_null('public', 'ideas', 'priority_score', 'ideas.list sorts by priority_score');
select col_not_null('public', 'executions', 'started_at', 'executions.list sorts by started_at');
select col_not_null('public', 'outputs', 'created_at', 'outputs.list sorts by created_at');
select col_not_null('public', 'blog_posts', 'created_at', 'blog_posts.list sorts by created_at');
select col_not_null('public', 'payment_receipts', 'created_at', 'credits.history sorts by created_at');
select col_not_null('public', 'credit_charges', 'created_at', 'credits.charges sorts by created_at');
select is(pg_get_constraintdef(
    (select oid from pg_constraint where conname = 'blog_posts_public_has_published_at'
                                     and conrelid = 'public.blog_posts'::regclass)),
  'CHECK (((NOT is_public) OR (published_at IS NOT NULL)))',
  'blog_posts.list_public sorts public posts by published_at, which a public post always has');

-- A plain index whose columns (and directions) begin another index on the same table only costs writes.
select is(
  (select array_agg(a.indexrelid::regclass::text || ' begins ' || b.indexrelid::regclass::text order by 1)
     from pg_index a
     join pg_index b on b.indrelid = a.indrelid and b.indexrelid <> a.indexrelid
    where a.indrelid in (select c.oid from pg_class c where c.relnamespace = 'public'::regnamespace)
      and not a.indisunique and a.indpred is null and a.indexprs is null
      and b.indpred is null and b.indexprs is null
      and a.indnkeyatts <= b.indnkeyatts
      and (a.indkey::int2[])[0:a.indnkeyatts - 1] = (b.indkey::int2[])[0:a.indnkeyatts - 1]
      and (a.indoption::int2[])[0:a.indnkeyatts - 1] = (b.indoption::int2[])[0:a.indnkeyatts - 1]),
  null,
  'no index in public is a prefix of another'
);

select * from finish();
rollback;
