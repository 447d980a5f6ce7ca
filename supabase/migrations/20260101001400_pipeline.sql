-- The expansion pipeline's database side: runs start by taking a credit hold, finish in one
-- transaction that writes the output, blog post, idea status and charge together, can be queued and
-- claimed by any number of workers (FOR UPDATE SKIP LOCKED), and are reaped when their worker dies.
--
-- executions.status gains 'queued' (a run waiting for a worker). A run's credit is 'held' in
-- credit_charges while it is in flight, then 'captured' (completed/partial) or 'released' (failed: the
-- credit goes back). A user with k credits can never have more than k runs charged.

-- executions: queueing, progress and idempotency -----------------------------------------------------
alter table public.executions
  add column idempotency_key uuid,
  add column requested_format text,
  add column current_stage text,
  add column worker_id text,
  add column heartbeat_at timestamptz,
  add constraint executions_idempotency_key_key unique (idempotency_key),
  add constraint executions_requested_format_check check (
    requested_format in ('blog_post', 'twitter_thread', 'github_repo', 'image')
  ),
  add constraint executions_current_stage_check check (
    current_stage in ('queued', 'select', 'judge', 'choose_format', 'generate', 'image', 'publish', 'persist', 'done')
  ),
  add constraint executions_worker_id_length check (char_length(worker_id) <= 200);

alter table public.executions drop constraint executions_status_check;
alter table public.executions add constraint executions_status_check check (
  status in ('queued', 'running', 'completed', 'failed', 'partial')
);
alter table public.executions drop constraint executions_completed_at_check;
alter table public.executions add constraint executions_completed_at_check check (
  (status in ('queued', 'running')) = (completed_at is null)
);

comment on column public.executions.idempotency_key is 'Caller-chosen key: expanding again with it returns this run.';
comment on column public.executions.requested_format is 'The format the caller forced, if any.';
comment on column public.executions.current_stage is 'The stage the run is in (done once finished).';
comment on column public.executions.heartbeat_at is 'Last sign of life from the worker; stale running runs are reaped.';

-- An idea is expanded by at most one run at a time (a second one would charge twice for it).
create unique index executions_one_in_flight_per_idea on public.executions (selected_idea_id)
  where status in ('queued', 'running');

-- Workers claim the oldest queued run; the reaper scans running runs by heartbeat.
create index idx_executions_queued on public.executions (started_at) where status = 'queued';
create index idx_executions_running_heartbeat on public.executions (heartbeat_at) where status = 'running';

-- start_expansion ---------------------------------------------------------------------------------------
create function public.start_expansion(
  p_user_id uuid,
  p_idea_id uuid default null,
  p_format text default null,
  p_idempotency_key uuid default null,
  p_enqueue boolean default false
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_usage public.usage_tracking%rowtype;
  v_execution public.executions%rowtype;
  v_idea_status text;
  v_type text;
begin
  if p_user_id is null then
    raise exception using errcode = '22004', message = 'p_user_id must not be null';
  end if;
  if p_format is not null and p_format not in ('blog_post', 'twitter_thread', 'github_repo', 'image') then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('unknown format %s', p_format),
      hint = 'Formats: blog_post, twitter_thread, github_repo, image.';
  end if;

  -- The user's balance row serializes every start, grant and charge for this user.
  select * into v_usage from public.usage_tracking u where u.user_id = p_user_id for update;
  if not found then
    raise exception using
      errcode = 'PT404',
      message = 'No usage record for user',
      detail = pg_catalog.format('user_id %s has no usage_tracking row', p_user_id);
  end if;

  if p_idempotency_key is not null then
    select * into v_execution from public.executions e where e.idempotency_key = p_idempotency_key;
    if found then
      if v_execution.user_id <> p_user_id then
        raise exception using errcode = '23505', message = 'idempotency key already used for another user';
      end if;
      -- created=false: the caller must not run it again; it reports the existing run instead.
      return pg_catalog.jsonb_build_object('created', false, 'execution', pg_catalog.to_jsonb(v_execution));
    end if;
  end if;

  if p_idea_id is not null then
    select i.status into v_idea_status from public.ideas i where i.id = p_idea_id and i.user_id = p_user_id;
    if not found then
      raise exception using errcode = 'PT404', message = 'Idea not found',
        detail = pg_catalog.format('no idea %s for user %s', p_idea_id, p_user_id);
    end if;
    if v_idea_status <> 'pending' then
      raise exception using
        errcode = '22023',
        message = pg_catalog.format('idea %s is %s; only pending ideas can be expanded', p_idea_id, v_idea_status);
    end if;
    -- Race-free: every start for this user holds the usage row lock taken above.
    if exists (select 1 from public.executions e
                where e.selected_idea_id = p_idea_id and e.status in ('queued', 'running')) then
      raise exception using
        errcode = '23505',
        message = pg_catalog.format('idea %s is already being expanded', p_idea_id),
        hint = 'Wait for that run to finish (or pass the same idempotency key to follow it).';
    end if;
  end if;

  if v_usage.free_expansions_remaining > 0 then
    v_type := 'free';
  elsif v_usage.paid_credits_remaining > 0 then
    v_type := 'paid';
  else
    raise exception using
      errcode = 'PT402',
      message = 'No credits remaining',
      detail = pg_catalog.format('user_id %s has 0 free and 0 paid credits (in-flight runs hold theirs)', p_user_id),
      hint = 'Purchase more credits; an admin grants them with add_paid_credits.';
  end if;

  -- The hold: the credit leaves the balance now; finish_expansion captures or releases it.
  update public.usage_tracking u
     set free_expansions_remaining = u.free_expansions_remaining - (v_type = 'free')::integer,
         paid_credits_remaining = u.paid_credits_remaining - (v_type = 'paid')::integer
   where u.user_id = p_user_id;

  insert into public.executions
    (user_id, selected_idea_id, requested_format, idempotency_key, status, current_stage, heartbeat_at)
  values
    (p_user_id, p_idea_id, p_format, p_idempotency_key,
     case when p_enqueue then 'queued' else 'running' end,
     case when p_enqueue then 'queued' else 'select' end,
     pg_catalog.now())
  returning * into v_execution;

  insert into public.credit_charges (user_id, idempotency_key, credit_type, status)
  values (p_user_id, v_execution.id, v_type, 'held');

  return pg_catalog.jsonb_build_object('created', true, 'execution', pg_catalog.to_jsonb(v_execution));
end;
$$;

comment on function public.start_expansion(uuid, uuid, text, uuid, boolean) is
  'Holds one credit (PT402 when none) and creates the running (or queued) execution, atomically; returns '
  '{created, execution}. The same idempotency key returns the existing execution (created=false) and holds nothing.';
revoke all on function public.start_expansion(uuid, uuid, text, uuid, boolean) from public, anon, authenticated;
grant execute on function public.start_expansion(uuid, uuid, text, uuid, boolean) to service_role;

-- settle the held credit of a run: capture (charged) or release (given back) ---------------------------
create function public.settle_expansion_credit(p_execution_id uuid, p_capture boolean)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_charge public.credit_charges%rowtype;
begin
  update public.credit_charges c
     set status = case when p_capture then 'captured' else 'released' end
   where c.idempotency_key = p_execution_id and c.status = 'held'
  returning * into v_charge;
  if not found then
    return null;  -- already settled: settling twice changes nothing
  end if;
  if p_capture then
    update public.usage_tracking u
       set total_expansions_used = u.total_expansions_used + 1,
           total_free_used = u.total_free_used + (v_charge.credit_type = 'free')::integer,
           total_paid_used = u.total_paid_used + (v_charge.credit_type = 'paid')::integer
     where u.user_id = v_charge.user_id;
  else
    update public.usage_tracking u
       set free_expansions_remaining = u.free_expansions_remaining + (v_charge.credit_type = 'free')::integer,
           paid_credits_remaining = u.paid_credits_remaining + (v_charge.credit_type = 'paid')::integer
     where u.user_id = v_charge.user_id;
  end if;
  return v_charge.credit_type;
end;
$$;

comment on function public.settle_expansion_credit(uuid, boolean) is
  'Internal: captures or releases the credit held for an execution; a no-op once settled.';
revoke all on function public.settle_expansion_credit(uuid, boolean) from public, anon, authenticated;
grant execute on function public.settle_expansion_credit(uuid, boolean) to service_role;

-- record_expansion_stage ---------------------------------------------------------------------------------
create function public.record_expansion_stage(p_execution_id uuid, p_stage text, p_fields jsonb default '{}')
returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  update public.executions e
     set current_stage = p_stage,
         heartbeat_at = pg_catalog.now(),
         selected_idea_id = coalesce((p_fields ->> 'selected_idea_id')::uuid, e.selected_idea_id),
         judge_score = coalesce((p_fields ->> 'judge_score')::integer, e.judge_score),
         judge_reasoning = coalesce(p_fields ->> 'judge_reasoning', e.judge_reasoning),
         format_chosen = coalesce(p_fields ->> 'format_chosen', e.format_chosen),
         format_reasoning = coalesce(p_fields ->> 'format_reasoning', e.format_reasoning),
         tokens_used = coalesce((p_fields ->> 'tokens_used')::integer, e.tokens_used)
   where e.id = p_execution_id and e.status = 'running';
  if not found then
    raise exception using
      errcode = '55000',
      message = pg_catalog.format('execution %s is not running', p_execution_id),
      hint = 'It finished, was reaped after its heartbeat stopped, or does not exist.';
  end if;
end;
$$;

comment on function public.record_expansion_stage(uuid, text, jsonb) is
  'Marks the stage a running execution entered (its heartbeat) and records judge/format fields.';
revoke all on function public.record_expansion_stage(uuid, text, jsonb) from public, anon, authenticated;
grant execute on function public.record_expansion_stage(uuid, text, jsonb) to service_role;

-- finish_expansion ---------------------------------------------------------------------------------------
create function public.finish_expansion(p_execution_id uuid, p_status text, p_result jsonb default '{}')
returns public.executions
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype;
  v_output_id uuid;
  v_post jsonb := p_result -> 'blog_post';
  v_output jsonb := p_result -> 'output';
  v_slug text;
  v_attempt integer := 1;
begin
  if p_status is null or p_status not in ('completed', 'partial', 'failed') then
    raise exception using errcode = '22023',
      message = pg_catalog.format('finish status must be completed, partial or failed, not %s', p_status);
  end if;

  select * into v_execution from public.executions e where e.id = p_execution_id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'Execution not found',
      detail = pg_catalog.format('no execution %s', p_execution_id);
  end if;
  if v_execution.status <> 'running' then
    if v_execution.status = p_status then
      return v_execution;  -- a retried finish
    end if;
    raise exception using
      errcode = '55000',
      message = pg_catalog.format('execution %s is already %s', p_execution_id, v_execution.status),
      hint = 'A reaped (timed-out) run cannot be finished; start a new one.';
  end if;
  if p_status <> 'failed' and (v_output is null or v_output ->> 'format' is null or v_output -> 'content' is null) then
    raise exception using errcode = '22023', message = 'a completed or partial run needs its output';
  end if;

  update public.executions e
     set status = p_status,
         current_stage = 'done',
         heartbeat_at = pg_catalog.now(),
         completed_at = greatest(pg_catalog.now(), e.started_at),
         duration_seconds = greatest(0, floor(extract(epoch from pg_catalog.now() - e.started_at)))::integer,
         selected_idea_id = coalesce((p_result ->> 'selected_idea_id')::uuid, e.selected_idea_id),
         judge_score = coalesce((p_result ->> 'judge_score')::integer, e.judge_score),
         judge_reasoning = coalesce(p_result ->> 'judge_reasoning', e.judge_reasoning),
         format_chosen = coalesce(p_result ->> 'format_chosen', e.format_chosen),
         format_reasoning = coalesce(p_result ->> 'format_reasoning', e.format_reasoning),
         tokens_used = coalesce((p_result ->> 'tokens_used')::integer, e.tokens_used),
         error_message = p_result ->> 'error_message',
         error_step = p_result ->> 'error_step'
   where e.id = p_execution_id
  returning * into v_execution;

  if p_status = 'failed' then
    perform public.settle_expansion_credit(p_execution_id, false);
    return v_execution;
  end if;

  insert into public.outputs
    (execution_id, user_id, idea_id, format, content, published, publication_url, publication_metadata, published_at)
  values (
    v_execution.id, v_execution.user_id, v_execution.selected_idea_id, v_output ->> 'format', v_output -> 'content',
    coalesce((v_output ->> 'publication_url') is not null, false),
    v_output ->> 'publication_url',
    coalesce(v_output -> 'publication_metadata', '{}'::jsonb),
    case when v_output ->> 'publication_url' is not null then pg_catalog.now() end
  )
  returning id into v_output_id;

  if v_post is not null then
    -- The slug is unique per user: on a collision try slug-2, slug-3, ...
    loop
      v_slug := case when v_attempt = 1 then v_post ->> 'slug'
                     else left(v_post ->> 'slug', 110) || '-' || v_attempt end;
      begin
        insert into public.blog_posts
          (output_id, user_id, title, slug, markdown_content, html_content, meta_description, tags, is_public,
           published_at)
        values (
          v_output_id, v_execution.user_id, v_post ->> 'title', v_slug, v_post ->> 'markdown_content',
          v_post ->> 'html_content', v_post ->> 'meta_description',
          coalesce(array(select pg_catalog.jsonb_array_elements_text(v_post -> 'tags')), array[]::text[]),
          coalesce((v_post ->> 'is_public')::boolean, true), pg_catalog.now()
        );
        exit;
      exception when unique_violation then
        v_attempt := v_attempt + 1;
        if v_attempt > 100 then
          raise;
        end if;
      end;
    end loop;
  end if;

  update public.ideas i set status = 'expanded'
   where i.id = v_execution.selected_idea_id and i.status = 'pending';

  perform public.settle_expansion_credit(p_execution_id, true);
  return v_execution;
end;
$$;

comment on function public.finish_expansion(uuid, text, jsonb) is
  'Finishes a running execution in one transaction: status and audit fields, and for completed/partial '
  'runs the output, blog post (unique slug), idea -> expanded and the credit captured; failed runs release it.';
revoke all on function public.finish_expansion(uuid, text, jsonb) from public, anon, authenticated;
grant execute on function public.finish_expansion(uuid, text, jsonb) to service_role;

-- mark_expansion_partial (a later step failed after the output was saved) ------------------------------
create function public.mark_expansion_partial(p_execution_id uuid, p_error_step text, p_error_message text)
returns public.executions
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype;
begin
  update public.executions e
     set status = 'partial', error_step = p_error_step, error_message = p_error_message
   where e.id = p_execution_id and e.status in ('completed', 'partial')
  returning * into v_execution;
  if not found then
    raise exception using errcode = '55000',
      message = pg_catalog.format('execution %s has no saved output to keep', p_execution_id);
  end if;
  return v_execution;
end;
$$;

comment on function public.mark_expansion_partial(uuid, text, text) is
  'Records that a step after the output was saved (publishing) failed: the run becomes partial, still charged once.';
revoke all on function public.mark_expansion_partial(uuid, text, text) from public, anon, authenticated;
grant execute on function public.mark_expansion_partial(uuid, text, text) to service_role;

-- claim_next_expansion (workers) -------------------------------------------------------------------------
create function public.claim_next_expansion(p_worker_id text)
returns setof public.executions
language sql
volatile
security invoker
set search_path = ''
as $$
  update public.executions e
     set status = 'running', current_stage = 'select', worker_id = p_worker_id,
         heartbeat_at = pg_catalog.now(), started_at = pg_catalog.now()
   where e.id = (
     select q.id from public.executions q
      where q.status = 'queued'
      order by q.started_at, q.id
      limit 1
      for update skip locked
   )
  returning e.*;
$$;

comment on function public.claim_next_expansion(text) is
  'Claims the oldest queued execution for a worker (FOR UPDATE SKIP LOCKED: each run is claimed once).';
revoke all on function public.claim_next_expansion(text) from public, anon, authenticated;
grant execute on function public.claim_next_expansion(text) to service_role;

-- reap_stale_expansions ----------------------------------------------------------------------------------
create function public.reap_stale_expansions(p_stale_after interval default interval '15 minutes')
returns setof uuid
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_id uuid;
begin
  for v_id in
    select e.id from public.executions e
     where e.status = 'running' and e.heartbeat_at < pg_catalog.now() - p_stale_after
     for update skip locked
  loop
    update public.executions e
       set status = 'failed', current_stage = 'done', error_step = 'timeout',
           error_message = pg_catalog.format('no heartbeat for %s: the worker stopped before finishing', p_stale_after),
           completed_at = greatest(pg_catalog.now(), e.started_at),
           duration_seconds = greatest(0, floor(extract(epoch from pg_catalog.now() - e.started_at)))::integer
     where e.id = v_id;
    perform public.settle_expansion_credit(v_id, false);
    return next v_id;
  end loop;
end;
$$;

comment on function public.reap_stale_expansions(interval) is
  'Fails running executions whose heartbeat is older than p_stale_after (error_step timeout) and releases their credits.';
revoke all on function public.reap_stale_expansions(interval) from public, anon, authenticated;
grant execute on function public.reap_stale_expansions(interval) to service_role;

-- record_idea_evaluation (the judge) ------------------------------------------------------------------
create function public.record_idea_evaluation(p_idea_id uuid, p_score integer, p_execution_id uuid default null)
returns void
language sql
volatile
security invoker
set search_path = ''
as $$
  update public.ideas i
     set priority_score = p_score,
         last_evaluated_at = pg_catalog.now(),
         times_evaluated = i.times_evaluated + 1
   where i.id = p_idea_id;
  -- Judging many ideas takes a while: each evaluation is also the run's heartbeat.
  update public.executions e set heartbeat_at = pg_catalog.now()
   where e.id = p_execution_id and e.status = 'running';
$$;

comment on function public.record_idea_evaluation(uuid, integer, uuid) is
  'The judge scored an idea: sets priority_score and last_evaluated_at, counts the evaluation, beats the run''s heartbeat.';
revoke all on function public.record_idea_evaluation(uuid, integer, uuid) from public, anon, authenticated;
grant execute on function public.record_idea_evaluation(uuid, integer, uuid) to service_role;
