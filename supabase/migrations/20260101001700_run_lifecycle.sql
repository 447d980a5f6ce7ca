-- The expansion run as a state machine the database owns end to end.
--
--   start_expansion            -> queued | running    holds one credit; fixes the run's idea
--   claim_next_expansion       queued -> running      only a run that holds its credit
--   record_expansion_stage     running                the stage and heartbeat (long runs only)
--   record_expansion_evaluation running              the judge's verdict (and a heartbeat)
--   finish_expansion           running -> completed | partial (credit captured, output stored in the
--                              same transaction) | failed (credit released, judge verdict kept)
--   record_expansion_delivery  completed | partial   what happened to a side effect after the capture:
--                              a publication, or a failure that makes the run partial (still charged once)
--   reap_stale_expansions      running -> failed      error_step = timeout, credit released
--   (idea delete or archive)   queued -> failed       error_step = cancelled, credit released
--   expansion_status           read                   status, stage and output ids (users: their own runs)
--
-- Any other status change is refused by a trigger, for every writer, naming both states (PT409). A
-- run's idea is chosen when it starts and never changes; an idea whose run is in progress cannot be
-- deleted or archived (a queued run is cancelled instead). Nothing can be delivered without a held
-- credit: finish and claim refuse a run that holds none.
--
-- Charging has one model: the private helpers below hold, capture and release credits, and both
-- consume_expansion_credit and the run use them. The free-then-paid-else-PT402 rule exists once.
--
-- Locks are always taken in one order, idea -> execution -> usage (balance), so no two of these
-- functions (or a user's delete of an idea) can deadlock; the reaper skips what is locked.
--
-- Codes: PT402 no credits, PT404 not found, PT409 the run (or idea) is not in a state that allows the
-- call (HTTP 409), 22023 a bad argument, 22004 a required argument is null.

-- private: helpers the API cannot reach (PostgREST exposes only public) -----------------------------
create schema if not exists private;
comment on schema private is 'Internal helpers of the credit and run functions; not exposed through the Data API.';
revoke all on schema private from public, anon, authenticated;
grant usage on schema private to service_role;

-- The user's balance row, locked: every hold, capture, release and grant for a user queues here.
create function private.lock_usage(p_user_id uuid)
returns public.usage_tracking
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_usage public.usage_tracking%rowtype;
begin
  if p_user_id is null then
    raise exception using errcode = '22004', message = 'p_user_id must not be null';
  end if;
  select * into v_usage from public.usage_tracking u where u.user_id = p_user_id for update;
  if not found then
    raise exception using
      errcode = 'PT404',
      message = 'No usage record for user',
      detail = pg_catalog.format('user_id %s has no usage_tracking row', p_user_id),
      hint = 'Create the user first: inserting into public.users creates the usage row.';
  end if;
  return v_usage;
end;
$$;

comment on function private.lock_usage(uuid) is 'Locks and returns the user''s usage_tracking row (PT404 when missing).';
revoke all on function private.lock_usage(uuid) from public, anon, authenticated;
grant execute on function private.lock_usage(uuid) to service_role;

-- Takes one credit, free first, then paid, else PT402: the only copy of that rule. Held credits have
-- left the balance but are not yet "used"; captured ones count in the lifetime totals.
create function private.take_credit(p_user_id uuid, p_key uuid, p_capture boolean)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_usage public.usage_tracking%rowtype := private.lock_usage(p_user_id);
  v_type text;
begin
  if v_usage.free_expansions_remaining > 0 then
    v_type := 'free';
  elsif v_usage.paid_credits_remaining > 0 then
    v_type := 'paid';
  else
    raise exception using
      errcode = 'PT402',
      message = 'No credits remaining',
      detail = pg_catalog.format('user_id %s has 0 free and 0 paid credits (runs in flight hold theirs)', p_user_id),
      hint = 'Purchase more credits; an admin grants them with add_paid_credits.';
  end if;

  update public.usage_tracking u
     set free_expansions_remaining = u.free_expansions_remaining - (v_type = 'free')::integer,
         paid_credits_remaining = u.paid_credits_remaining - (v_type = 'paid')::integer,
         total_expansions_used = u.total_expansions_used + p_capture::integer,
         total_free_used = u.total_free_used + (p_capture and v_type = 'free')::integer,
         total_paid_used = u.total_paid_used + (p_capture and v_type = 'paid')::integer
   where u.user_id = p_user_id;

  insert into public.credit_charges (user_id, idempotency_key, credit_type, status)
  values (p_user_id, p_key, v_type, case when p_capture then 'captured' else 'held' end);
  return v_type;
end;
$$;

comment on function private.take_credit(uuid, uuid, boolean) is
  'Takes one credit (free first, then paid; PT402 when none): captured at once, or held for a run.';
revoke all on function private.take_credit(uuid, uuid, boolean) from public, anon, authenticated;
grant execute on function private.take_credit(uuid, uuid, boolean) to service_role;

-- Settles the credit a user holds under a key (keys are per user): capture (charged) or release (given back). Null when nothing was held, so
-- settling twice changes nothing and callers can refuse a run that holds no credit.
create function private.settle_credit(p_user_id uuid, p_key uuid, p_capture boolean)
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
   where c.user_id = p_user_id and c.idempotency_key = p_key and c.status = 'held'
  returning * into v_charge;
  if not found then
    return null;
  end if;
  update public.usage_tracking u
     set free_expansions_remaining = u.free_expansions_remaining + (not p_capture and v_charge.credit_type = 'free')::integer,
         paid_credits_remaining = u.paid_credits_remaining + (not p_capture and v_charge.credit_type = 'paid')::integer,
         total_expansions_used = u.total_expansions_used + p_capture::integer,
         total_free_used = u.total_free_used + (p_capture and v_charge.credit_type = 'free')::integer,
         total_paid_used = u.total_paid_used + (p_capture and v_charge.credit_type = 'paid')::integer
   where u.user_id = v_charge.user_id;
  return v_charge.credit_type;
end;
$$;

comment on function private.settle_credit(uuid, uuid, boolean) is
  'Captures or releases the credit held under a key; null when none is held (already settled, or never held).';
revoke all on function private.settle_credit(uuid, uuid, boolean) from public, anon, authenticated;
grant execute on function private.settle_credit(uuid, uuid, boolean) to service_role;

-- The old charging model goes: one set of helpers now serves the run and consume_expansion_credit.
drop function public.mark_expansion_partial(uuid, text, text);
drop function public.finish_expansion(uuid, text, jsonb);
drop function public.record_expansion_stage(uuid, text, jsonb);
drop function public.record_idea_evaluation(uuid, integer, uuid);
drop function public.reap_stale_expansions(interval);
drop function public.claim_next_expansion(text);
drop function public.start_expansion(uuid, uuid, text, uuid, boolean);
drop function public.settle_expansion_credit(uuid, boolean);

-- consume_expansion_credit: a charge outside any run, through the same helpers -------------------------
create or replace function public.consume_expansion_credit(p_user_id uuid, p_idempotency_key uuid default null)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_charge public.credit_charges%rowtype;
begin
  -- Locked first, so a concurrent replay of the same key waits here and then finds the first charge.
  perform private.lock_usage(p_user_id);
  if p_idempotency_key is not null then
    -- Keys are per user: another user's key is neither an error nor a reveal, just a new key here.
    select * into v_charge from public.credit_charges c
     where c.user_id = p_user_id and c.idempotency_key = p_idempotency_key;
    if found then
      -- A key whose run failed had its credit given back, and one still in flight may yet be: neither
      -- is "already charged".
      if v_charge.status = 'released' then
        raise exception using
          errcode = '55000',
          message = 'the run with this idempotency key failed and its credit was released',
          hint = 'Use a new key for a new attempt.';
      elsif v_charge.status = 'held' then
        raise exception using
          errcode = '55000',
          message = 'the run with this idempotency key is still in flight; its credit is held, not yet charged',
          hint = 'Ask again once the run has finished.';
      end if;
      return v_charge.credit_type;
    end if;
  end if;
  return private.take_credit(p_user_id, p_idempotency_key, true);
end;
$$;

-- executions: what the run was asked for, fixed at start --------------------------------------------------
alter table public.executions add column make_public boolean not null default false;

comment on column public.executions.selected_idea_id is
  'The idea the run expands, fixed when it starts (null only once the idea is deleted after the run).';
comment on column public.executions.make_public is
  'Whether what the run publishes (a blog post, a GitHub repository) is public; private unless the caller asked '
  '(fixed at start).';

-- Status changes follow the machine, whoever writes; the idea and owner never change.
create function public.enforce_execution_transition()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if new.status is distinct from old.status and not (
    (old.status = 'queued' and new.status in ('running', 'failed'))
    or (old.status = 'running' and new.status in ('completed', 'partial', 'failed'))
    or (old.status = 'completed' and new.status = 'partial')
  ) then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('invalid execution status transition: %s -> %s', old.status, new.status),
      detail = pg_catalog.format('execution %s', old.id),
      hint = 'Runs move queued -> running -> completed | partial | failed (a queued run may be cancelled; '
             'a delivery failing after the capture makes a completed run partial).';
  end if;
  -- Whoever writes, a run ends settled: delivered ones with their credit captured, failed ones holding none.
  if new.status is distinct from old.status and new.status in ('completed', 'partial') and old.status = 'running'
     and not exists (select 1 from public.credit_charges c
                     where c.user_id = new.user_id and c.idempotency_key = new.id and c.status = 'captured') then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('execution %s cannot become %s without its credit captured', old.id, new.status),
      hint = 'finish_expansion captures the held credit and stores the output in one transaction.';
  end if;
  if new.status is distinct from old.status and new.status = 'failed'
     and exists (select 1 from public.credit_charges c
                     where c.user_id = new.user_id and c.idempotency_key = new.id and c.status = 'held') then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('execution %s cannot fail while it still holds its credit', old.id),
      hint = 'finish_expansion, the reaper and cancelling release the hold first.';
  end if;
  if new.selected_idea_id is distinct from old.selected_idea_id and new.selected_idea_id is not null then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('the idea of execution %s is fixed when it starts', old.id);
  end if;
  -- The one owner change allowed is the cascade of a re-keyed profile (a person linked to their confirmed
  -- auth identity, see the confirmed_identity migration): by then the old id is gone. Anyone else writing
  -- user_id still sees the old owner's profile, and is refused.
  if new.user_id is distinct from old.user_id
     and exists (select 1 from public.users u where u.id = old.user_id) then
    raise exception using errcode = 'PT409', message = pg_catalog.format('execution %s cannot change owner', old.id);
  end if;
  return new;
end;
$$;

comment on function public.enforce_execution_transition() is
  'Trigger: refuses execution status changes outside the run state machine, and changes of its idea or owner '
  '(other than following its owner''s re-keyed profile).';
revoke all on function public.enforce_execution_transition() from public, anon, authenticated, service_role;

create trigger executions_status_transition
  before update of status, selected_idea_id, user_id on public.executions
  for each row execute function public.enforce_execution_transition();

-- A run in progress keeps its idea: deleting or archiving it is refused while the run is running, and
-- cancels (releasing the hold of) a run still queued. Security definer: the user deleting their idea
-- cannot write executions or credits themselves, and must not need to.
create function private.guard_idea_in_flight()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_run uuid;
  v_action text := case when tg_op = 'DELETE' then 'deleted' else 'archived' end;
begin
  if tg_op = 'UPDATE' and not (new.status = 'archived' and old.status is distinct from 'archived') then
    return new;
  end if;
  -- The owner is being deleted (the cascade from public.users): their runs go with them.
  if tg_op = 'DELETE' and not exists (select 1 from public.users u where u.id = old.user_id) then
    return old;
  end if;
  for v_run in
    select e.id from public.executions e
     where e.selected_idea_id = old.id and e.status = 'queued'
     for update
  loop
    perform private.settle_credit(old.user_id, v_run, false);
    update public.executions e
       set status = 'failed', current_stage = 'done', error_step = 'cancelled',
           error_message = pg_catalog.format('cancelled before a worker started: the idea was %s', v_action),
           completed_at = greatest(pg_catalog.now(), e.started_at),
           duration_seconds = 0
     where e.id = v_run;
  end loop;
  select e.id into v_run from public.executions e where e.selected_idea_id = old.id and e.status = 'running';
  if found then
    raise exception using
      errcode = 'PT409',
      message = 'idea has a run in progress',
      detail = pg_catalog.format('idea %s is being expanded by execution %s', old.id, v_run),
      hint = pg_catalog.format('Wait for the run to finish, then the idea can be %s.', v_action);
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end;
$$;

comment on function private.guard_idea_in_flight() is
  'Trigger: an idea whose run is running cannot be deleted or archived; a queued run on it is cancelled.';
revoke all on function private.guard_idea_in_flight() from public, anon, authenticated, service_role;

create trigger ideas_guard_delete_in_flight
  before delete on public.ideas
  for each row execute function private.guard_idea_in_flight();
create trigger ideas_guard_archive_in_flight
  before update of status on public.ideas
  for each row execute function private.guard_idea_in_flight();

-- start_expansion ------------------------------------------------------------------------------------------
create function public.start_expansion(
  p_user_id uuid,
  p_idea_id uuid default null,
  p_format text default null,
  p_idempotency_key uuid default null,
  p_enqueue boolean default false,
  p_public boolean default false
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype;
  v_idea public.ideas%rowtype;
  v_id uuid := pg_catalog.gen_random_uuid();
begin
  if p_format is not null and p_format not in ('blog_post', 'twitter_thread', 'github_repo', 'image') then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('unknown format %s', p_format),
      hint = 'Formats: blog_post, twitter_thread, github_repo, image.';
  end if;

  -- Lock order idea -> usage. FOR SHARE: a concurrent delete or archive of the idea waits for this start,
  -- then sees the run and refuses (or cancels it, if queued).
  if p_idea_id is not null then
    select * into v_idea from public.ideas i where i.id = p_idea_id and i.user_id = p_user_id for share;
  end if;

  -- Every start, grant and charge for this user queues on this lock, so the checks below stay true.
  perform private.lock_usage(p_user_id);

  if p_idempotency_key is not null then
    -- Keys are per user: another user's key is neither an error nor a reveal, just a new key here.
    select * into v_execution from public.executions e
     where e.user_id = p_user_id and e.idempotency_key = p_idempotency_key;
    if found then
      -- created=false: the caller must not run it again; it reports the existing run instead.
      select * into v_idea from public.ideas i where i.id = v_execution.selected_idea_id;
      return pg_catalog.jsonb_build_object(
        'created', false, 'execution', pg_catalog.to_jsonb(v_execution),
        'idea', case when v_idea.id is null then null else pg_catalog.to_jsonb(v_idea) end);
    end if;
  end if;

  if p_idea_id is not null then
    if v_idea.id is null then
      raise exception using errcode = 'PT404', message = 'Idea not found',
        detail = pg_catalog.format('no idea %s for user %s', p_idea_id, p_user_id);
    end if;
    if v_idea.status <> 'pending' then
      raise exception using
        errcode = '22023',
        message = pg_catalog.format('idea %s is %s; only pending ideas can be expanded', p_idea_id, v_idea.status);
    end if;
    if exists (select 1 from public.executions e
                where e.selected_idea_id = p_idea_id and e.status in ('queued', 'running')) then
      raise exception using
        errcode = '23505',
        message = pg_catalog.format('idea %s is already being expanded', p_idea_id),
        hint = 'Wait for that run to finish (or pass the same idempotency key to follow it).';
    end if;
  else
    -- No idea asked for: the most promising pending idea not already in a run (best judge score, then
    -- oldest). SKIP LOCKED: an idea being deleted or edited right now is passed over, never waited for.
    select * into v_idea from public.ideas i
     where i.user_id = p_user_id and i.status = 'pending'
       and not exists (select 1 from public.executions e
                        where e.selected_idea_id = i.id and e.status in ('queued', 'running'))
     order by i.priority_score desc, i.created_at, i.id
     limit 1
     for share skip locked;
    if not found then
      raise exception using
        errcode = 'PT404',
        message = 'the user has no pending idea to expand',
        detail = pg_catalog.format('user %s has no pending idea that is not already being expanded', p_user_id),
        hint = 'Add an idea first.';
    end if;
  end if;

  perform private.take_credit(p_user_id, v_id, false);

  insert into public.executions
    (id, user_id, selected_idea_id, requested_format, idempotency_key, make_public, status, current_stage,
     heartbeat_at)
  values
    (v_id, p_user_id, v_idea.id, p_format, p_idempotency_key, coalesce(p_public, false),
     case when p_enqueue then 'queued' else 'running' end,
     case when p_enqueue then 'queued' else 'select' end,
     pg_catalog.now())
  returning * into v_execution;

  return pg_catalog.jsonb_build_object(
    'created', true, 'execution', pg_catalog.to_jsonb(v_execution), 'idea', pg_catalog.to_jsonb(v_idea));
end;
$$;

comment on function public.start_expansion(uuid, uuid, text, uuid, boolean, boolean) is
  'Holds one credit (PT402 when none) and creates the running (or queued) execution on a fixed idea, atomically; '
  'returns {created, execution, idea}. The same idempotency key returns the existing run (created=false).';
revoke all on function public.start_expansion(uuid, uuid, text, uuid, boolean, boolean) from public, anon, authenticated;
grant execute on function public.start_expansion(uuid, uuid, text, uuid, boolean, boolean) to service_role;

-- claim_next_expansion (workers) ----------------------------------------------------------------------------
create function public.claim_next_expansion(p_worker_id text)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype;
begin
  -- Only runs that hold their credit are claimed: a queued row without a hold is never worked on.
  update public.executions e
     set status = 'running', current_stage = 'select', worker_id = p_worker_id,
         heartbeat_at = pg_catalog.now(), started_at = pg_catalog.now()
   where e.id = (
     select q.id from public.executions q
      where q.status = 'queued'
        and exists (select 1 from public.credit_charges c
                     where c.user_id = q.user_id and c.idempotency_key = q.id and c.status = 'held')
      order by q.started_at, q.id
      limit 1
      for update skip locked
   )
  returning * into v_execution;
  if not found then
    return null;
  end if;
  return pg_catalog.jsonb_build_object(
    'created', true, 'execution', pg_catalog.to_jsonb(v_execution),
    'idea', (select pg_catalog.to_jsonb(i) from public.ideas i where i.id = v_execution.selected_idea_id));
end;
$$;

comment on function public.claim_next_expansion(text) is
  'Claims the oldest queued execution that holds its credit (FOR UPDATE SKIP LOCKED: each run is claimed once); '
  'returns {created, execution, idea}, or null when nothing is queued.';
revoke all on function public.claim_next_expansion(text) from public, anon, authenticated;
grant execute on function public.claim_next_expansion(text) to service_role;

-- record_expansion_stage / record_expansion_evaluation ------------------------------------------------------
-- Every transition of a run starts here: its idea, then its row, locked (so finish, reap and delivery
-- never interleave, and the lock order matches a user's delete of the idea: idea -> execution -> usage).
create function private.lock_execution(p_execution_id uuid)
returns public.executions
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype;
begin
  perform 1 from public.ideas i
   where i.id = (select e.selected_idea_id from public.executions e where e.id = p_execution_id)
     for no key update;
  select * into v_execution from public.executions e where e.id = p_execution_id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'Execution not found',
      detail = pg_catalog.format('no execution %s', p_execution_id);
  end if;
  return v_execution;
end;
$$;

comment on function private.lock_execution(uuid) is 'Locks and returns an execution (PT404 when missing).';
revoke all on function private.lock_execution(uuid) from public, anon, authenticated;
grant execute on function private.lock_execution(uuid) to service_role;

create function private.running_execution(p_execution_id uuid, p_action text)
returns public.executions
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype := private.lock_execution(p_execution_id);
begin
  if v_execution.status <> 'running' then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('execution %s is %s, not running: cannot %s', p_execution_id, v_execution.status,
                                  p_action),
      hint = 'It finished, was reaped after its heartbeat stopped, or is still queued.';
  end if;
  return v_execution;
end;
$$;

comment on function private.running_execution(uuid, text) is 'Locks a running execution (PT404 / PT409 otherwise).';
revoke all on function private.running_execution(uuid, text) from public, anon, authenticated;
grant execute on function private.running_execution(uuid, text) to service_role;

create function public.record_expansion_stage(p_execution_id uuid, p_stage text)
returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  if p_stage is null or p_stage not in ('select', 'judge', 'choose_format', 'generate', 'image', 'persist') then
    raise exception using errcode = '22023',
      message = pg_catalog.format('a running stage is one of select, judge, choose_format, generate, image, persist; not %s',
                                  p_stage);
  end if;
  perform private.running_execution(p_execution_id, 'record a stage');
  update public.executions e set current_stage = p_stage, heartbeat_at = pg_catalog.now() where e.id = p_execution_id;
end;
$$;

comment on function public.record_expansion_stage(uuid, text) is
  'The stage a running execution is in, and its heartbeat (sent only by runs longer than about a minute).';
revoke all on function public.record_expansion_stage(uuid, text) from public, anon, authenticated;
grant execute on function public.record_expansion_stage(uuid, text) to service_role;

create function public.record_expansion_evaluation(p_execution_id uuid, p_score integer, p_reasoning text)
returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype := private.running_execution(p_execution_id, 'record an evaluation');
begin
  if p_score is null or p_score < 0 or p_score > 100 or p_reasoning is null or pg_catalog.btrim(p_reasoning) = '' then
    raise exception using errcode = '22023',
      message = 'an evaluation needs a score from 0 to 100 and its reasoning';
  end if;
  update public.executions e
     set judge_score = p_score, judge_reasoning = p_reasoning, heartbeat_at = pg_catalog.now()
   where e.id = p_execution_id;
  update public.ideas i
     set priority_score = p_score, last_evaluated_at = pg_catalog.now(), times_evaluated = i.times_evaluated + 1
   where i.id = v_execution.selected_idea_id;
end;
$$;

comment on function public.record_expansion_evaluation(uuid, integer, text) is
  'The judge scored the run''s idea: on the execution, and as the idea''s priority (also a heartbeat).';
revoke all on function public.record_expansion_evaluation(uuid, integer, text) from public, anon, authenticated;
grant execute on function public.record_expansion_evaluation(uuid, integer, text) to service_role;

-- finish_expansion ------------------------------------------------------------------------------------------
create function public.finish_expansion(
  p_execution_id uuid,
  p_status text,
  p_tokens_used integer default 0,
  p_judge_score integer default null,
  p_judge_reasoning text default null,
  p_format_chosen text default null,
  p_format_reasoning text default null,
  p_content jsonb default null,
  p_error_step text default null,
  p_error_message text default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype;
  v_output public.outputs%rowtype;
  v_post public.blog_posts%rowtype;
  v_slug text;
  v_attempt integer := 1;
begin
  if p_status is null or p_status not in ('completed', 'partial', 'failed') then
    raise exception using errcode = '22023',
      message = pg_catalog.format('finish status must be completed, partial or failed, not %s', p_status);
  end if;

  v_execution := private.lock_execution(p_execution_id);
  if v_execution.status <> 'running' then
    if v_execution.status = p_status then  -- a retried finish whose first answer was lost
      select * into v_output from public.outputs o where o.execution_id = p_execution_id order by o.created_at limit 1;
      select * into v_post from public.blog_posts b where b.output_id = v_output.id;
      return pg_catalog.jsonb_build_object(
        'execution', pg_catalog.to_jsonb(v_execution),
        'output', case when v_output.id is null then null else pg_catalog.to_jsonb(v_output) end,
        'blog_post', case when v_post.id is null then null else pg_catalog.to_jsonb(v_post) end);
    end if;
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('invalid execution status transition: %s -> %s', v_execution.status, p_status),
      detail = pg_catalog.format('execution %s', p_execution_id),
      hint = 'Only a running execution finishes; a reaped (timed-out) run cannot be finished, start a new one.';
  end if;

  if (p_status = 'completed') <> (p_error_step is null and p_error_message is null) then
    raise exception using errcode = '22023',
      message = 'a completed run has no error; a partial or failed run says which step failed and why';
  end if;
  if p_tokens_used is null or p_tokens_used < 0 then
    raise exception using errcode = '22023', message = 'tokens_used must be zero or more';
  end if;
  if p_status = 'failed' then
    if p_content is not null then
      raise exception using errcode = '22023', message = 'a failed run stores no output';
    end if;
  else
    if p_content is null or pg_catalog.jsonb_typeof(p_content) <> 'object' then
      raise exception using errcode = '22023', message = 'a completed or partial run needs its output content';
    end if;
    if p_format_chosen is null or p_content ->> 'format' is distinct from p_format_chosen then
      raise exception using errcode = '22023',
        message = pg_catalog.format('the output''s format (%s) must be the chosen format (%s)',
                                    p_content ->> 'format', p_format_chosen);
    end if;
  end if;
  if v_execution.requested_format is not null and p_format_chosen is distinct from v_execution.requested_format
     and p_format_chosen is not null then
    raise exception using errcode = '22023',
      message = pg_catalog.format('the run was asked for %s, not %s', v_execution.requested_format, p_format_chosen);
  end if;

  -- The capture (or release) and the output are one transaction: no delivery without a held credit.
  if private.settle_credit(v_execution.user_id, p_execution_id, p_status <> 'failed') is null
     and p_status <> 'failed' then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('execution %s holds no credit: nothing can be delivered', p_execution_id),
      hint = 'Runs start with start_expansion, which holds their credit.';
  end if;

  -- The judge's verdict is kept on failed runs too.
  if p_judge_score is not null then
    perform public.record_expansion_evaluation(p_execution_id, p_judge_score, p_judge_reasoning);
  end if;

  update public.executions e
     set status = p_status,
         current_stage = 'done',
         heartbeat_at = pg_catalog.now(),
         completed_at = greatest(pg_catalog.now(), e.started_at),
         duration_seconds = greatest(0, floor(extract(epoch from pg_catalog.now() - e.started_at)))::integer,
         tokens_used = p_tokens_used,
         format_chosen = p_format_chosen,
         format_reasoning = p_format_reasoning,
         error_step = p_error_step,
         error_message = left(p_error_message, 2000)
   where e.id = p_execution_id
  returning * into v_execution;

  if p_status = 'failed' then
    return pg_catalog.jsonb_build_object('execution', pg_catalog.to_jsonb(v_execution), 'output', null,
                                         'blog_post', null);
  end if;

  insert into public.outputs (execution_id, user_id, idea_id, format, content)
  values (v_execution.id, v_execution.user_id, v_execution.selected_idea_id, p_format_chosen, p_content)
  returning * into v_output;

  if p_format_chosen = 'blog_post' then
    -- The slug is unique per user: on a collision try slug-2, slug-3, ...
    loop
      v_slug := case when v_attempt = 1 then p_content ->> 'slug'
                     else left(p_content ->> 'slug', 110) || '-' || v_attempt end;
      begin
        insert into public.blog_posts
          (output_id, user_id, title, slug, markdown_content, html_content, meta_description, tags, is_public,
           published_at)
        values (
          v_output.id, v_execution.user_id, p_content ->> 'title', v_slug, p_content ->> 'markdown',
          p_content ->> 'html', p_content ->> 'meta_description',
          coalesce(array(select pg_catalog.jsonb_array_elements_text(p_content -> 'tags')), array[]::text[]),
          v_execution.make_public, pg_catalog.now()
        )
        returning * into v_post;
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

  return pg_catalog.jsonb_build_object(
    'execution', pg_catalog.to_jsonb(v_execution),
    'output', pg_catalog.to_jsonb(v_output),
    'blog_post', case when v_post.id is null then null else pg_catalog.to_jsonb(v_post) end);
end;
$$;

comment on function public.finish_expansion(uuid, text, integer, integer, text, text, text, jsonb, text, text) is
  'Finishes a running execution in one transaction. completed/partial: the held credit is captured, the output '
  '(and a blog post, private unless the run asked otherwise) stored and the idea marked expanded. failed: the '
  'credit is released. The judge verdict is kept either way. Returns {execution, output, blog_post}.';
revoke all on function public.finish_expansion(uuid, text, integer, integer, text, text, text, jsonb, text, text)
  from public, anon, authenticated;
grant execute on function public.finish_expansion(uuid, text, integer, integer, text, text, text, jsonb, text, text)
  to service_role;

-- record_expansion_delivery ---------------------------------------------------------------------------------
create function public.record_expansion_delivery(
  p_execution_id uuid,
  p_step text,
  p_error_message text default null,
  p_publication_url text default null,
  p_publication_metadata jsonb default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_execution public.executions%rowtype;
  v_output public.outputs%rowtype;
begin
  if p_step is null or p_step not in ('image', 'publish') then
    raise exception using errcode = '22023',
      message = pg_catalog.format('a delivery step is image or publish, not %s', p_step);
  end if;
  if (p_error_message is null) = (p_publication_url is null) then
    raise exception using errcode = '22023',
      message = 'a delivery either failed (an error message) or was published (a URL), not both or neither';
  end if;
  if p_publication_url is not null and (p_step <> 'publish' or p_publication_url !~ '^https://') then
    raise exception using errcode = '22023',
      message = 'a publication is a publish step with an https:// URL';
  end if;
  if p_publication_metadata is not null and pg_catalog.jsonb_typeof(p_publication_metadata) <> 'object' then
    raise exception using errcode = '22023', message = 'publication metadata must be a JSON object';
  end if;

  v_execution := private.lock_execution(p_execution_id);
  if v_execution.status not in ('completed', 'partial') then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('execution %s is %s: only a delivered (completed or partial) run records a delivery',
                                  p_execution_id, v_execution.status);
  end if;

  if p_error_message is not null then
    -- Charged once already; the run becomes partial and the delivery can be retried for free.
    update public.executions e
       set status = 'partial',
           error_step = coalesce(e.error_step, p_step),
           error_message = left(concat_ws('; ', e.error_message, p_error_message), 2000)
     where e.id = p_execution_id
    returning * into v_execution;
  end if;
  select * into v_output from public.outputs o where o.execution_id = p_execution_id order by o.created_at limit 1;
  if p_publication_url is not null then
    if v_output.format is distinct from 'github_repo' then
      raise exception using errcode = '22023',
        message = pg_catalog.format('only a repository is published, not %s', coalesce(v_output.format, 'no output'));
    end if;
    update public.outputs o
       set published = true, publication_url = p_publication_url,
           publication_metadata = coalesce(p_publication_metadata, '{}'::jsonb), published_at = pg_catalog.now()
     where o.id = v_output.id
    returning * into v_output;
  end if;
  return pg_catalog.jsonb_build_object(
    'execution', pg_catalog.to_jsonb(v_execution),
    'output', case when v_output.id is null then null else pg_catalog.to_jsonb(v_output) end,
    'blog_post', null);
end;
$$;

comment on function public.record_expansion_delivery(uuid, text, text, text, jsonb) is
  'After the capture: records a publication (URL and metadata on the output), or a failed delivery, which makes '
  'the run partial (charged once; the delivery can be retried without another charge).';
revoke all on function public.record_expansion_delivery(uuid, text, text, text, jsonb) from public, anon, authenticated;
grant execute on function public.record_expansion_delivery(uuid, text, text, text, jsonb) to service_role;

-- reap_stale_expansions ---------------------------------------------------------------------------------------
create function public.reap_stale_expansions(p_stale_after interval default interval '15 minutes')
returns setof uuid
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_id uuid;
  v_user uuid;
begin
  if p_stale_after is null or p_stale_after < interval '0' then
    raise exception using errcode = '22023', message = 'stale_after must be zero or more';
  end if;
  -- SKIP LOCKED: a run being finished right now is not stale; finish and reap never both settle a run.
  -- A run whose owner's balance is locked is left for the next round: one user can never stall the reaper.
  for v_id, v_user in
    select e.id, e.user_id from public.executions e
     where e.status = 'running' and e.heartbeat_at < pg_catalog.now() - p_stale_after
     for update skip locked
  loop
    perform 1 from public.usage_tracking u where u.user_id = v_user for update skip locked;
    continue when not found;
    perform private.settle_credit(v_user, v_id, false);
    update public.executions e
       set status = 'failed', current_stage = 'done', error_step = 'timeout',
           error_message = pg_catalog.format('no heartbeat for %s: the worker stopped before finishing', p_stale_after),
           completed_at = greatest(pg_catalog.now(), e.started_at),
           duration_seconds = greatest(0, floor(extract(epoch from pg_catalog.now() - e.started_at)))::integer
     where e.id = v_id;
    return next v_id;
  end loop;
end;
$$;

comment on function public.reap_stale_expansions(interval) is
  'Fails running executions whose heartbeat is older than p_stale_after (error_step timeout) and releases their credits.';
revoke all on function public.reap_stale_expansions(interval) from public, anon, authenticated;
grant execute on function public.reap_stale_expansions(interval) to service_role;

-- expansion_status -------------------------------------------------------------------------------------------
create function public.expansion_status(p_execution_id uuid)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  -- Security invoker: a user sees only their own runs (RLS), the service role any.
  select pg_catalog.jsonb_build_object(
           'execution', pg_catalog.to_jsonb(e),
           'output_ids', coalesce((select pg_catalog.jsonb_agg(o.id order by o.created_at)
                                     from public.outputs o where o.execution_id = e.id), '[]'::jsonb))
    from public.executions e
   where e.id = p_execution_id;
$$;

comment on function public.expansion_status(uuid) is
  'A run''s row and its output ids in one call; null when it does not exist or is not the caller''s.';
revoke all on function public.expansion_status(uuid) from public, anon, authenticated;
grant execute on function public.expansion_status(uuid) to authenticated, service_role;
