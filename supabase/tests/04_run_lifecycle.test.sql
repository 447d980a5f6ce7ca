-- The run lifecycle: start, stage, evaluation, finish, delivery, claim, reap, status and refund. Their
-- transitions, the hold rules (no delivery without a held credit; a failed run gives it back) and who
-- may call them.
begin;
create extension if not exists pgtap with schema extensions;
-- The first migration revokes PUBLIC's default EXECUTE on new functions; pgTAP's must stay callable
-- while these tests act as authenticated or service_role (rolled back with everything else).
grant execute on all functions in schema extensions to public;
set local search_path = extensions, public;
select plan(82);

-- Who may call what -----------------------------------------------------------------------------------
select function_privs_are('public', 'start_expansion', array['uuid', 'uuid', 'text', 'uuid', 'boolean', 'boolean'],
  'authenticated', array[]::text[]);
select function_privs_are('public', 'start_expansion', array['uuid', 'uuid', 'text', 'uuid', 'boolean', 'boolean'],
  'service_role', array['EXECUTE']);
select function_privs_are('public', 'claim_next_expansion', array['text'], 'authenticated', array[]::text[]);
select function_privs_are('public', 'claim_next_expansion', array['text'], 'service_role', array['EXECUTE']);
select function_privs_are('public', 'record_expansion_stage', array['uuid', 'text'], 'authenticated', array[]::text[]);
select function_privs_are('public', 'record_expansion_stage', array['uuid', 'text'], 'service_role', array['EXECUTE']);
select function_privs_are('public', 'record_expansion_evaluation', array['uuid', 'integer', 'text'],
  'authenticated', array[]::text[]);
select function_privs_are('public', 'record_expansion_evaluation', array['uuid', 'integer', 'text'],
  'service_role', array['EXECUTE']);
select function_privs_are('public', 'finish_expansion',
  array['uuid', 'text', 'integer', 'integer', 'text', 'text', 'text', 'jsonb', 'text', 'text', 'jsonb', 'numeric',
        'integer'],
  'authenticated', array[]::text[]);
select function_privs_are('public', 'finish_expansion',
  array['uuid', 'text', 'integer', 'integer', 'text', 'text', 'text', 'jsonb', 'text', 'text', 'jsonb', 'numeric',
        'integer'],
  'service_role', array['EXECUTE']);
select function_privs_are('public', 'record_expansion_delivery', array['uuid', 'text', 'text', 'text', 'jsonb'],
  'authenticated', array[]::text[]);
select function_privs_are('public', 'record_expansion_delivery', array['uuid', 'text', 'text', 'text', 'jsonb'],
  'service_role', array['EXECUTE']);
select function_privs_are('public', 'reap_stale_expansions', array['interval'], 'authenticated', array[]::text[]);
select function_privs_are('public', 'reap_stale_expansions', array['interval'], 'service_role', array['EXECUTE']);
select function_privs_are('public', 'expansion_status', array['uuid'], 'authenticated', array['EXECUTE']);
select function_privs_are('public', 'expansion_status', array['uuid'], 'service_role', array['EXECUTE']);
select function_privs_are('public', 'refund_payment', array['uuid', 'text'], 'authenticated', array[]::text[]);
select function_privs_are('public', 'refund_payment', array['uuid', 'text'], 'service_role', array['EXECUTE']);
select ok(not has_schema_privilege('authenticated', 'private', 'USAGE'), 'users cannot reach the private helpers');
select ok(not has_schema_privilege('anon', 'private', 'USAGE'), 'nor can anonymous callers');

-- Fixtures ---------------------------------------------------------------------------------------------
insert into public.users (id, email) values
  ('00000000-0000-4000-8000-0000000000d1', 'tap-runs@example.test'),
  ('00000000-0000-4000-8000-0000000000d2', 'tap-runs-other@example.test');
insert into public.ideas (id, user_id, title) values
  ('00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-0000000000d1', 'First idea'),
  ('00000000-0000-4000-8000-00000000a002', '00000000-0000-4000-8000-0000000000d1', 'Second idea'),
  ('00000000-0000-4000-8000-00000000a003', '00000000-0000-4000-8000-0000000000d1', 'Archived idea'),
  ('00000000-0000-4000-8000-00000000a004', '00000000-0000-4000-8000-0000000000d1', 'Reaped idea'),
  ('00000000-0000-4000-8000-00000000a005', '00000000-0000-4000-8000-0000000000d1', 'Guarded idea'),
  ('00000000-0000-4000-8000-00000000a006', '00000000-0000-4000-8000-0000000000d1', 'Cancelled idea'),
  ('00000000-0000-4000-8000-00000000a009', '00000000-0000-4000-8000-0000000000d2', 'Someone else''s idea');
update public.ideas set status = 'archived' where id = '00000000-0000-4000-8000-00000000a003';
-- Later ideas must not be picked by the automatic choice below: only a002 is left pending for it.
update public.ideas set priority_score = 0;
update public.ideas set priority_score = 90 where id = '00000000-0000-4000-8000-00000000a002';

create temporary table tap_run (name text primary key, id uuid) on commit drop;
grant all on tap_run to service_role, authenticated;

set local role service_role;
select set_config('request.jwt.claims', '{"role":"service_role"}', true);

-- start ------------------------------------------------------------------------------------------------
insert into tap_run select 'first', (start_expansion(
  '00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a001', 'blog_post',
  '00000000-0000-4000-8000-00000000e101') -> 'execution' ->> 'id')::uuid;
select is(
  (select (status, current_stage, selected_idea_id, make_public)::text from public.executions
    where id = (select id from tap_run where name = 'first')),
  '(running,select,00000000-0000-4000-8000-00000000a001,f)',
  'start creates a running run on the requested idea, its post private by default'
);
select is(
  (select (credit_type, status)::text from public.credit_charges
    where idempotency_key = (select id from tap_run where name = 'first')),
  '(free,held)',
  'and holds one free credit'
);
select is(
  (select (free_expansions_remaining, total_expansions_used)::text from public.usage_tracking
    where user_id = '00000000-0000-4000-8000-0000000000d1'),
  '(4,0)',
  'a held credit leaves the balance but is not yet used'
);
select is(
  (start_expansion('00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a001', 'blog_post',
     '00000000-0000-4000-8000-00000000e101') ->> 'created')::boolean,
  false,
  'the same idempotency key returns the existing run'
);
select is(
  (select count(*)::integer from public.credit_charges where user_id = '00000000-0000-4000-8000-0000000000d1'),
  1,
  'and holds nothing more'
);
select throws_ok(
  $$select start_expansion('00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a001')$$,
  '23505', null, 'an idea is in one run at a time'
);
select throws_ok(
  $$select start_expansion('00000000-0000-4000-8000-0000000000d1', null, 'video')$$,
  '22023', 'unknown format video', 'an unknown format is refused'
);
select throws_ok(
  $$select start_expansion('00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a003')$$,
  '22023', null, 'only pending ideas are expanded'
);
select throws_ok(
  $$select start_expansion('00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a009')$$,
  'PT404', 'Idea not found', 'another user''s idea is not found'
);
insert into tap_run select 'same-key-other-user', (start_expansion(
  '00000000-0000-4000-8000-0000000000d2', '00000000-0000-4000-8000-00000000a009', null,
  '00000000-0000-4000-8000-00000000e101') -> 'execution' ->> 'id')::uuid;
select is(
  (select (user_id, selected_idea_id)::text from public.executions
    where id = (select id from tap_run where name = 'same-key-other-user')),
  '(00000000-0000-4000-8000-0000000000d2,00000000-0000-4000-8000-00000000a009)',
  'keys are per user: another user''s key starts this user''s own run, never blocked by or shown theirs'
);
do $$ begin  -- give that run's credit back: the counts below are about a direct charge
  perform finish_expansion((select id from tap_run where name = 'same-key-other-user'), 'failed', 0, null, null,
                           null, null, null, 'judge', 'released');
end $$;
insert into tap_run select 'queued', (start_expansion(
  '00000000-0000-4000-8000-0000000000d1', null, 'twitter_thread', null, true) -> 'execution' ->> 'id')::uuid;
select is(
  (select (status, current_stage, selected_idea_id)::text from public.executions
    where id = (select id from tap_run where name = 'queued')),
  '(queued,queued,00000000-0000-4000-8000-00000000a002)',
  'without an idea the most promising pending one is fixed at start'
);

-- stage and evaluation ---------------------------------------------------------------------------------
select lives_ok(
  $$select record_expansion_stage((select id from tap_run where name = 'first'), 'generate')$$,
  'a running run records its stage'
);
select is(
  (select current_stage from public.executions where id = (select id from tap_run where name = 'first')),
  'generate',
  'and the stage is what a watcher sees'
);
select throws_ok(
  $$select record_expansion_stage((select id from tap_run where name = 'first'), 'done')$$,
  '22023', null, 'done is not a running stage'
);
select throws_ok(
  $$select record_expansion_stage((select id from tap_run where name = 'queued'), 'judge')$$,
  'PT409', null, 'a queued run has no stage to record'
);
select lives_ok(
  $$select record_expansion_evaluation((select id from tap_run where name = 'first'), 77, 'promising')$$,
  'the judge''s verdict is recorded'
);
select is(
  (select (priority_score, times_evaluated)::text from public.ideas where id = '00000000-0000-4000-8000-00000000a001'),
  '(77,1)',
  'on the run''s idea'
);
select throws_ok(
  $$select record_expansion_evaluation((select id from tap_run where name = 'first'), 101, 'too much')$$,
  '22023', null, 'a score is 0-100'
);

-- finish ---------------------------------------------------------------------------------------------------
select throws_ok(
  $$select finish_expansion((select id from tap_run where name = 'first'), 'completed')$$,
  '22023', null, 'a completed run needs its content'
);
select throws_ok(
  $$select finish_expansion((select id from tap_run where name = 'first'), 'completed', 0, null, null,
      'twitter_thread', null, '{"format": "twitter_thread", "posts": ["a", "b", "c"], "generated_by": "t"}')$$,
  '22023', null, 'the run was asked for a blog post, not a thread'
);
select lives_ok(
  $$select finish_expansion((select id from tap_run where name = 'first'), 'completed', 120, null, null,
      'blog_post', 'asked',
      '{"format": "blog_post", "title": "T", "slug": "t", "markdown": "# T", "html": "<h1>T</h1>",
        "meta_description": "m", "tags": ["a"]}')$$,
  'a running run finishes completed with its output'
);
select is(
  (select (e.status, e.current_stage, e.tokens_used, c.status)::text
     from public.executions e join public.credit_charges c on c.idempotency_key = e.id
    where e.id = (select id from tap_run where name = 'first')),
  '(completed,done,120,captured)',
  'the credit is captured with the output'
);
select is(
  (select count(*)::integer from public.outputs where execution_id = (select id from tap_run where name = 'first')),
  1,
  'one output'
);
select is(
  (select (b.slug, b.is_public)::text from public.blog_posts b join public.outputs o on o.id = b.output_id
    where o.execution_id = (select id from tap_run where name = 'first')),
  '(t,f)',
  'a private blog post'
);
select is(
  (select (status, priority_score)::text from public.ideas where id = '00000000-0000-4000-8000-00000000a001'),
  '(expanded,77)',
  'the idea is expanded'
);
select is(
  (select (free_expansions_remaining, total_expansions_used, total_free_used)::text from public.usage_tracking
    where user_id = '00000000-0000-4000-8000-0000000000d1'),
  '(3,1,1)',
  'one credit used (the queued run still holds another)'
);
select is(
  (finish_expansion((select id from tap_run where name = 'first'), 'completed') -> 'execution' ->> 'status'),
  'completed',
  'a retried finish returns the finished run'
);
select throws_ok(
  $$select finish_expansion((select id from tap_run where name = 'first'), 'failed', 0, null, null, null, null,
      null, 'judge', 'late')$$,
  'PT409', null, 'completed -> failed is refused'
);
select lives_ok(
  $$select record_expansion_delivery((select id from tap_run where name = 'first'), 'publish', 'GitHub said no')$$,
  'a delivery failing after the capture is recorded'
);
select is(
  (select (status, error_step)::text from public.executions where id = (select id from tap_run where name = 'first')),
  '(partial,publish)',
  'and makes the run partial, still charged once'
);

-- claim, then a failed finish ------------------------------------------------------------------------------
select is(
  (claim_next_expansion('tap-worker') -> 'execution' ->> 'id')::uuid,
  (select id from tap_run where name = 'queued'),
  'a worker claims the queued run'
);
select is(
  (select (status, worker_id)::text from public.executions where id = (select id from tap_run where name = 'queued')),
  '(running,tap-worker)',
  'which is now running'
);
select is(claim_next_expansion('tap-worker'), null, 'each run is claimed once');
select lives_ok(
  $$select finish_expansion((select id from tap_run where name = 'queued'), 'failed', 40, 55, 'meh', null, null,
      null, 'generate', 'the model failed')$$,
  'a running run finishes failed'
);
select is(
  (select (e.status, e.judge_score, c.status)::text
     from public.executions e join public.credit_charges c on c.idempotency_key = e.id
    where e.id = (select id from tap_run where name = 'queued')),
  '(failed,55,released)',
  'its credit is released and the judge''s verdict kept'
);
select is(
  (select (status)::text from public.ideas where id = '00000000-0000-4000-8000-00000000a002'),
  'pending',
  'its idea stays pending'
);

-- reap -------------------------------------------------------------------------------------------------
insert into tap_run select 'stale', (start_expansion(
  '00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a004', 'image') -> 'execution' ->> 'id')::uuid;
reset role;
update public.executions set heartbeat_at = now() - interval '1 hour' where id = (select id from tap_run where name = 'stale');
set local role service_role;
select is(
  array(select reap_stale_expansions('15 minutes')),
  array[(select id from tap_run where name = 'stale')],
  'a run without a heartbeat is reaped'
);
select is(
  (select (e.status, e.error_step, c.status)::text
     from public.executions e join public.credit_charges c on c.idempotency_key = e.id
    where e.id = (select id from tap_run where name = 'stale')),
  '(failed,timeout,released)',
  'failed with error_step timeout, its credit released'
);
select is(array(select reap_stale_expansions('15 minutes')), array[]::uuid[], 'and reaped once');
select throws_ok(
  $$select finish_expansion((select id from tap_run where name = 'stale'), 'completed', 0, null, null, 'image',
      null, '{"format": "image"}')$$,
  'PT409', null, 'a reaped run cannot be finished'
);

-- no delivery without a held credit ---------------------------------------------------------------------
insert into tap_run values ('unheld', '00000000-0000-4000-8000-00000000f001');
insert into public.executions (id, user_id, selected_idea_id, status)
values ('00000000-0000-4000-8000-00000000f001', '00000000-0000-4000-8000-0000000000d1',
        '00000000-0000-4000-8000-00000000a006', 'queued');
select is(claim_next_expansion('tap-worker'), null, 'a queued run that holds no credit is never claimed');
reset role;
update public.executions set status = 'running' where id = '00000000-0000-4000-8000-00000000f001';
set local role service_role;
select throws_ok(
  $$select finish_expansion('00000000-0000-4000-8000-00000000f001', 'completed', 0, null, null, 'image', null,
      '{"format": "image"}')$$,
  'PT409', null, 'nor finished with an output'
);
select throws_ok(
  $$update public.executions set status = 'queued' where id = '00000000-0000-4000-8000-00000000f001'$$,
  'PT409', 'invalid execution status transition: running -> queued', 'transitions outside the machine are refused'
);
select throws_ok(
  $$update public.executions set selected_idea_id = '00000000-0000-4000-8000-00000000a002'
     where id = '00000000-0000-4000-8000-00000000f001'$$,
  'PT409', null, 'a run''s idea never changes'
);
select lives_ok(
  $$select finish_expansion('00000000-0000-4000-8000-00000000f001', 'failed', 0, null, null, null, null, null,
      'select', 'no hold')$$,
  'it can only fail'
);

-- the idea of a run in progress ---------------------------------------------------------------------------
insert into tap_run select 'guarded', (start_expansion(
  '00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a005', 'blog_post') -> 'execution' ->> 'id')::uuid;
insert into tap_run select 'cancelled', (start_expansion(
  '00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a006', 'blog_post', null, true)
  -> 'execution' ->> 'id')::uuid;
reset role;
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-0000000000d1","role":"authenticated"}', true);
select throws_ok(
  $$delete from public.ideas where id = '00000000-0000-4000-8000-00000000a005'$$,
  'PT409', 'idea has a run in progress', 'a user cannot delete the idea of a running run'
);
select throws_ok(
  $$update public.ideas set status = 'archived' where id = '00000000-0000-4000-8000-00000000a005'$$,
  'PT409', 'idea has a run in progress', 'nor archive it'
);
select lives_ok(
  $$delete from public.ideas where id = '00000000-0000-4000-8000-00000000a006'$$,
  'deleting the idea of a queued run is allowed'
);
select is(
  (select (e.status, e.error_step, c.status)::text
     from public.executions e join public.credit_charges c on c.idempotency_key = e.id
    where e.id = (select id from tap_run where name = 'cancelled')),
  '(failed,cancelled,released)',
  'and cancels that run, releasing its hold'
);
select isnt(expansion_status((select id from tap_run where name = 'guarded')), null, 'a user sees their run''s status');
select throws_ok(
  $$select start_expansion('00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-00000000a002')$$,
  '42501', null, 'users cannot start runs themselves'
);
select throws_ok(
  $$select finish_expansion((select id from tap_run where name = 'guarded'), 'failed', 0, null, null, null, null,
      null, 'judge', 'mine')$$,
  '42501', null, 'nor finish them'
);
reset role;
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-0000000000d2","role":"authenticated"}', true);
select is(expansion_status((select id from tap_run where name = 'guarded')), null, 'but not another user''s');
reset role;

-- consume_expansion_credit uses the same helpers ---------------------------------------------------------
set local role service_role;
select is(
  consume_expansion_credit('00000000-0000-4000-8000-0000000000d2'),
  'free',
  'a direct charge takes a free credit first'
);
select is(
  (select (free_expansions_remaining, total_expansions_used, total_free_used)::text from public.usage_tracking
    where user_id = '00000000-0000-4000-8000-0000000000d2'),
  '(4,1,1)',
  'captured at once'
);

-- refund --------------------------------------------------------------------------------------------------
select is(
  (select credits_removed from refund_payment(
     add_paid_credits('00000000-0000-4000-8000-0000000000d2', 3, 3.00, 'TAP-RUN-REFUND', 'tap', null))),
  3,
  'a refund takes back the unused paid credits'
);
select throws_ok(
  $$select * from refund_payment((select id from public.payment_receipts where bmc_reference = 'TAP-RUN-REFUND'))$$,
  '55000', null, 'a receipt is refunded once'
);
reset role;

-- model calls: a failed call is recorded with its error and whether usage was reported (bounded) --------------
select ok(
  private.model_calls_valid('[{"stage": "judge", "task": "judge", "provider": "openai", "model": "m",
    "input_tokens": 700, "output_tokens": 4096, "fallback": false, "failed": true, "error": "cut at the cap",
    "usage_reported": true}, {"stage": "judge", "task": "judge", "provider": "openai", "model": "m",
    "input_tokens": 0, "output_tokens": 0, "fallback": false, "usage_reported": false}]'::jsonb),
  'a failed call (its error, its tokens) and a call without usage are recorded'
);
select ok(
  not private.model_calls_valid('[{"stage": "judge", "task": "judge", "provider": "offline", "model": "m",
    "input_tokens": 0, "output_tokens": 0, "fallback": true, "fallback_errors": ["x"], "failed": true}]'::jsonb),
  'a failed call never fell back'
);
select ok(
  not private.model_calls_valid(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'stage', 'judge', 'task', 'judge', 'provider', 'openai', 'model', 'm', 'input_tokens', 1, 'output_tokens', 1,
    'fallback', false, 'failed', true, 'error', pg_catalog.repeat('e', 501)))),
  'an error is at most 500 characters'
);
select ok(
  not private.model_calls_valid('[{"stage": "judge", "task": "judge", "provider": "openai", "model": "m",
    "input_tokens": 1, "output_tokens": 1, "fallback": false, "usage_reported": "no"}]'::jsonb),
  'usage_reported is a boolean'
);
select ok(
  not private.model_calls_valid('[{"stage": "judge", "task": "judge", "provider": "openai", "model": "m",
    "input_tokens": 1, "output_tokens": 1, "fallback": false, "failed": "yes"}]'::jsonb),
  'failed is a boolean'
);

select * from finish();
rollback;
