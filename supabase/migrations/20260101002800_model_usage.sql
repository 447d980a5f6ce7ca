-- An honest run record: what each model call cost, who answered, and whether the run fell back.
--
--   executions.model_calls   one entry per model call: {stage, task, provider, model, input_tokens,
--                            output_tokens, fallback, fallback_errors?, failed?, error?, usage_reported?}
--                            (at most 64, each field bounded). A failed call (failed = true: a length cut,
--                            invalid JSON, a connection error) spent what it reports but gave no answer.
--   executions.input_tokens, output_tokens   their sums, failed calls included (tokens_used stays their total)
--   executions.cost_usd      what the calls cost by the operator's price table (null: no table, or a model
--                            the table does not price)
--   executions.generation    'model' (a model answered), 'offline' (the offline templates were configured,
--                            no model was tried) or 'fallback' (a model was tried, failed, and the offline
--                            templates answered instead); derived here from the answered (not failed) calls,
--                            null while running
--   executions.review_score  the last review's 0-100 score (null: no review step)
--   executions.charged       true once the run's credit is captured
--
-- The fallback rule, enforced by finish_expansion whoever calls it: a run whose content was written by the
-- offline templates because the models failed (a call marked fallback: only a draft can be, see
-- model_calls_valid) is never charged as a model run. It ends 'partial' (completed is refused), its held
-- credit is RELEASED (charged = false), its output is kept for its owner, its blog post is private whatever
-- the run asked, its idea stays pending (so the owner can expand it again with a model), and
-- record_expansion_delivery refuses it (no publication, no delivery of a run never charged). A judge, format
-- choice, plan or review answered offline after a model failed is recorded with its errors and changes nothing.
-- A run configured offline (no model tried) is 'offline' and charged as before.
--
-- Users read these columns (their select grant on executions) and write none of them: executions are
-- written only by the service role and the run functions.

-- Element checks of model_calls: a CHECK cannot hold a subquery, so this immutable helper does it. Whoever
-- writes a row evaluates it (as with private.jsonb_strings_within), hence the grant to authenticated.
create function private.model_calls_valid(p_calls jsonb)
returns boolean
language sql
immutable
security invoker
set search_path = ''
as $$
  select pg_catalog.jsonb_typeof(p_calls) = 'array'
     and pg_catalog.jsonb_array_length(p_calls) <= 64
     and not exists (
       select 1 from pg_catalog.jsonb_array_elements(p_calls) as c(call)
        where pg_catalog.jsonb_typeof(c.call) <> 'object'
           -- only the documented keys
           or exists (select 1 from pg_catalog.jsonb_object_keys(c.call) as k(key)
                       where k.key not in ('stage', 'task', 'provider', 'model', 'input_tokens', 'output_tokens',
                                           'fallback', 'fallback_errors', 'failed', 'error', 'usage_reported'))
           or pg_catalog.jsonb_typeof(c.call -> 'stage') is distinct from 'string'
           or pg_catalog.char_length(c.call ->> 'stage') not between 1 and 32
           or (c.call ->> 'task') is null
           or (c.call ->> 'task') not in ('judge', 'choose_format', 'plan', 'blog_post', 'twitter_thread',
                                          'github_repo', 'image', 'review')
           or pg_catalog.jsonb_typeof(c.call -> 'provider') is distinct from 'string'
           or pg_catalog.char_length(c.call ->> 'provider') not between 1 and 64
           or pg_catalog.jsonb_typeof(c.call -> 'model') is distinct from 'string'
           or pg_catalog.char_length(c.call ->> 'model') not between 1 and 200
           or pg_catalog.jsonb_typeof(c.call -> 'input_tokens') is distinct from 'number'
           or pg_catalog.jsonb_typeof(c.call -> 'output_tokens') is distinct from 'number'
           or (c.call ->> 'input_tokens') !~ '^[0-9]{1,9}$'
           or (c.call ->> 'output_tokens') !~ '^[0-9]{1,9}$'
           or pg_catalog.jsonb_typeof(c.call -> 'fallback') is distinct from 'boolean'
           or (c.call ? 'fallback_errors' and not (
                 pg_catalog.jsonb_typeof(c.call -> 'fallback_errors') = 'array'
                 and pg_catalog.jsonb_array_length(c.call -> 'fallback_errors') <= 8
                 and not exists (
                   select 1 from pg_catalog.jsonb_array_elements(c.call -> 'fallback_errors') as f(error)
                    where pg_catalog.jsonb_typeof(f.error) <> 'string'
                       or pg_catalog.char_length(f.error #>> '{}') > 500)))
           -- a failed call (it may have spent tokens, but gave no answer), its error, whether usage was reported
           or (c.call ? 'failed' and pg_catalog.jsonb_typeof(c.call -> 'failed') <> 'boolean')
           or (c.call ? 'usage_reported' and pg_catalog.jsonb_typeof(c.call -> 'usage_reported') <> 'boolean')
           or (c.call ? 'error' and pg_catalog.jsonb_typeof(c.call -> 'error') not in ('string', 'null'))
           or pg_catalog.char_length(c.call ->> 'error') > 500
           -- a failed call never answered, so it never fell back
           or (coalesce((c.call -> 'failed') = 'true'::jsonb, false) and (c.call ->> 'fallback')::boolean)
           -- a call that fell back was answered by the offline templates, after at least one error, and wrote
           -- the run's content (a draft in the generate stage): an auxiliary call (judge, format choice, plan,
           -- review) answered offline keeps its errors but is no fallback, so it cannot make a model-written run free
           or ((c.call ->> 'fallback')::boolean
               and ((c.call ->> 'provider') <> 'offline'
                    or pg_catalog.jsonb_array_length(coalesce(c.call -> 'fallback_errors', '[]'::jsonb)) = 0
                    or (c.call ->> 'stage') <> 'generate'
                    or (c.call ->> 'task') not in ('blog_post', 'twitter_thread', 'github_repo', 'image'))));
$$;

comment on function private.model_calls_valid(jsonb) is
  'True when p_calls is a JSON array of at most 64 model calls, each {stage, task, provider, model, input_tokens, '
  'output_tokens, fallback, fallback_errors?, failed?, error?, usage_reported?} with bounded strings and whole '
  'non-negative token counts; a failed call never fell back.';
revoke all on function private.model_calls_valid(jsonb) from public, anon, authenticated;
grant execute on function private.model_calls_valid(jsonb) to authenticated, service_role;

alter table public.executions
  add column input_tokens integer not null default 0,
  add column output_tokens integer not null default 0,
  add column cost_usd numeric(12, 6),
  add column model_calls jsonb not null default '[]'::jsonb,
  add column generation text,
  add column review_score integer,
  add column charged boolean not null default false,
  add constraint executions_input_tokens_check check (input_tokens >= 0),
  add constraint executions_output_tokens_check check (output_tokens >= 0),
  add constraint executions_cost_usd_check check (cost_usd >= 0),
  add constraint executions_model_calls_check check (private.model_calls_valid(model_calls)),
  add constraint executions_generation_check check (generation in ('model', 'offline', 'fallback')),
  add constraint executions_generation_once_finished check (generation is null or status not in ('queued', 'running')),
  add constraint executions_review_score_check check (review_score >= 0 and review_score <= 100),
  add constraint executions_charged_when_delivered check (not charged or status in ('completed', 'partial')),
  add constraint executions_fallback_never_charged check (not (charged and generation = 'fallback')),
  -- What a model wrote is bounded like every other stored text (the pipeline keeps 1,000 characters): a server
  -- that ignores its output cap cannot fill the record. NOT VALID: rows written before are left as they are.
  add constraint executions_judge_reasoning_length check (char_length(judge_reasoning) <= 2000) not valid,
  add constraint executions_format_reasoning_length check (char_length(format_reasoning) <= 2000) not valid;

comment on column public.executions.input_tokens is 'Input (prompt) tokens summed over the run''s model calls.';
comment on column public.executions.output_tokens is 'Output (completion) tokens summed over the run''s model calls.';
comment on column public.executions.cost_usd is
  'What the model calls cost by the operator''s price table; null without a table or for a model it does not price.';
comment on column public.executions.model_calls is
  'One entry per model call: {stage, task, provider, model, input_tokens, output_tokens, fallback, fallback_errors?, '
  'failed?, error?, usage_reported?}; failed calls count in the sums, not in the generation.';
comment on column public.executions.generation is
  'model | offline (configured offline, no model tried) | fallback (a model failed; the offline templates answered); '
  'null while the run is queued or running.';
comment on column public.executions.review_score is 'The last review''s score, 0-100; null when the run had no review.';
comment on column public.executions.charged is 'True once the run''s credit is captured (never for a fallback run).';

-- Runs finished before this migration: charged is what the ledger says.
update public.executions e
   set charged = true
 where e.status in ('completed', 'partial')
   and exists (select 1 from public.credit_charges c
                where c.user_id = e.user_id and c.idempotency_key = e.id and c.status = 'captured');

-- The transition trigger: a run becomes completed or partial only with its credit captured, except a
-- fallback run, which becomes partial with its credit released. Every other rule is unchanged.
create or replace function public.enforce_execution_transition()
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
  -- Whoever writes, a run ends settled: delivered ones with their credit captured (a fallback run: released,
  -- and never charged), failed ones holding none.
  if new.status is distinct from old.status and new.status in ('completed', 'partial') and old.status = 'running'
     and not (new.status = 'partial' and new.generation = 'fallback' and not new.charged
              and exists (select 1 from public.credit_charges c
                           where c.user_id = new.user_id and c.idempotency_key = new.id and c.status = 'released'))
     and not (new.generation is distinct from 'fallback'
              and exists (select 1 from public.credit_charges c
                           where c.user_id = new.user_id and c.idempotency_key = new.id and c.status = 'captured'))
  then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('execution %s cannot become %s without its credit captured', old.id, new.status),
      hint = 'finish_expansion captures the held credit and stores the output in one transaction (a run that fell '
             'back to the offline templates is partial, its credit released).';
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
  'Trigger: refuses execution status changes outside the run state machine (delivered runs need their credit '
  'captured; a fallback run is partial with it released), and changes of its idea or owner (other than following '
  'its owner''s re-keyed profile).';
revoke all on function public.enforce_execution_transition() from public, anon, authenticated, service_role;

-- finish_expansion: the old signature goes; the new one takes the same arguments (callers keep working) and
-- the run record's. -----------------------------------------------------------------------------------------
drop function public.finish_expansion(uuid, text, integer, integer, text, text, text, jsonb, text, text);

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
  p_error_message text default null,
  p_model_calls jsonb default '[]'::jsonb,
  p_cost_usd numeric default null,
  p_review_score integer default null
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
  v_calls jsonb := coalesce(p_model_calls, '[]'::jsonb);
  v_input bigint := 0;
  v_output_tokens bigint := 0;
  v_tokens bigint;
  v_generation text;
  v_capture boolean;
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
  if not private.model_calls_valid(v_calls) then
    raise exception using errcode = '22023',
      message = 'model_calls must be an array of at most 64 calls, each {stage, task, provider, model, input_tokens, '
                'output_tokens, fallback, fallback_errors?, failed?, error?, usage_reported?} with bounded strings '
                'and whole token counts';
  end if;
  if p_cost_usd is not null and (p_cost_usd < 0 or p_cost_usd >= 1000000) then
    raise exception using errcode = '22023', message = 'cost_usd must be from 0 to 999999.999999';
  end if;
  if p_review_score is not null and (p_review_score < 0 or p_review_score > 100) then
    raise exception using errcode = '22023', message = 'review_score must be from 0 to 100';
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

  -- The record is derived from the calls: the sums (failed calls spent tokens too), and how the run was
  -- generated, from the calls that answered (a failed call is no answer; with none answered, a model tried
  -- and failed makes 'model').
  if pg_catalog.jsonb_array_length(v_calls) > 0 then
    select coalesce(sum((c.call ->> 'input_tokens')::bigint), 0), coalesce(sum((c.call ->> 'output_tokens')::bigint), 0),
           case when coalesce(bool_or((c.call ->> 'fallback')::boolean)
                                filter (where not coalesce((c.call -> 'failed') = 'true'::jsonb, false)), false)
                  then 'fallback'
                when coalesce(bool_or((c.call ->> 'provider') <> 'offline')
                                filter (where not coalesce((c.call -> 'failed') = 'true'::jsonb, false)), false)
                  then 'model'
                when bool_or(not coalesce((c.call -> 'failed') = 'true'::jsonb, false)) then 'offline'
                when bool_or((c.call ->> 'provider') <> 'offline') then 'model'
                else 'offline' end
      into v_input, v_output_tokens, v_generation
      from pg_catalog.jsonb_array_elements(v_calls) as c(call);
    v_tokens := v_input + v_output_tokens;
    if p_tokens_used <> 0 and p_tokens_used <> v_tokens then
      raise exception using errcode = '22023',
        message = pg_catalog.format('tokens_used (%s) must be the sum of the model calls'' tokens (%s)',
                                    p_tokens_used, v_tokens);
    end if;
    if v_tokens > 2147483647 then
      raise exception using errcode = '22023', message = 'the model calls'' tokens exceed an integer';
    end if;
  else
    -- A caller that records no calls (written before this migration): its total, and a model run if it spent tokens.
    v_tokens := p_tokens_used;
    v_generation := case when p_tokens_used > 0 then 'model' else 'offline' end;
  end if;

  -- The fallback rule: never charged as a model run, and never completed.
  if v_generation = 'fallback' and p_status = 'completed' then
    raise exception using errcode = '22023',
      message = 'a run in which a model call fell back to the offline templates ends partial, not completed',
      hint = 'Finish it partial, with the stage that fell back and the errors: its credit is released.';
  end if;
  v_capture := p_status <> 'failed' and v_generation <> 'fallback';

  -- The capture (or release) and the output are one transaction: no delivery without a held credit.
  if private.settle_credit(v_execution.user_id, p_execution_id, v_capture) is null
     and p_status <> 'failed' then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('execution %s holds no credit: nothing can be delivered', p_execution_id),
      hint = 'Runs start with start_expansion, which holds their credit.';
  end if;

  -- The judge's verdict is kept on failed runs too; but a run that is not charged keeps no text a model wrote
  -- (its score stays, the idea's priority): otherwise an idea that makes every draft fail would buy the judge's
  -- and the format choice's prose for nothing, run after run.
  if not v_capture then
    if exists (select 1 from pg_catalog.jsonb_array_elements(v_calls) as c(call)
                where c.call ->> 'task' = 'judge' and c.call ->> 'provider' <> 'offline'
                  and c.call -> 'failed' is distinct from 'true'::jsonb) then
      p_judge_reasoning := 'Not kept: the run was not charged.';
    end if;
    if exists (select 1 from pg_catalog.jsonb_array_elements(v_calls) as c(call)
                where c.call ->> 'task' = 'choose_format' and c.call ->> 'provider' <> 'offline'
                  and c.call -> 'failed' is distinct from 'true'::jsonb) then
      p_format_reasoning := 'Not kept: the run was not charged.';
    end if;
  end if;
  if p_judge_score is not null then
    perform public.record_expansion_evaluation(p_execution_id, p_judge_score, p_judge_reasoning);
  end if;

  update public.executions e
     set status = p_status,
         current_stage = 'done',
         heartbeat_at = pg_catalog.now(),
         completed_at = greatest(pg_catalog.now(), e.started_at),
         duration_seconds = greatest(0, floor(extract(epoch from pg_catalog.now() - e.started_at)))::integer,
         tokens_used = v_tokens::integer,
         input_tokens = v_input::integer,
         output_tokens = v_output_tokens::integer,
         model_calls = v_calls,
         cost_usd = p_cost_usd,
         review_score = p_review_score,
         generation = v_generation,
         charged = v_capture,
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
          -- a fallback run's post stays private, whatever the run asked
          v_execution.make_public and v_generation <> 'fallback', pg_catalog.now()
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

  -- A fallback run was not charged for a model's work: its idea stays pending, to be expanded again.
  update public.ideas i set status = 'expanded'
   where i.id = v_execution.selected_idea_id and i.status = 'pending' and v_generation <> 'fallback';

  return pg_catalog.jsonb_build_object(
    'execution', pg_catalog.to_jsonb(v_execution),
    'output', pg_catalog.to_jsonb(v_output),
    'blog_post', case when v_post.id is null then null else pg_catalog.to_jsonb(v_post) end);
end;
$$;

comment on function public.finish_expansion(uuid, text, integer, integer, text, text, text, jsonb, text, text, jsonb,
                                            numeric, integer) is
  'Finishes a running execution in one transaction. completed/partial: the held credit is captured, the output '
  '(and a blog post, private unless the run asked otherwise) stored and the idea marked expanded. failed: the '
  'credit is released. The judge verdict is kept either way. The model calls are recorded with their sums and '
  'the generation derived from them; a run whose content fell back to the offline templates must be partial, its '
  'credit is released (charged = false, its post private) and its idea stays pending. Returns {execution, output, '
  'blog_post}.';
revoke all on function public.finish_expansion(uuid, text, integer, integer, text, text, text, jsonb, text, text,
                                               jsonb, numeric, integer)
  from public, anon, authenticated;
grant execute on function public.finish_expansion(uuid, text, integer, integer, text, text, text, jsonb, text, text,
                                                  jsonb, numeric, integer)
  to service_role;

-- record_expansion_delivery: as before, and never for a run that was not charged ------------------------------
create or replace function public.record_expansion_delivery(
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
  if not v_execution.charged then
    raise exception using
      errcode = 'PT409',
      message = pg_catalog.format('execution %s was not charged (generation %s): it has no delivery', p_execution_id,
                                  coalesce(v_execution.generation, 'unknown')),
      hint = 'A run that fell back to the offline templates keeps its output for its owner and is never published; '
             'run it again with a working model.';
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
  'the run partial (charged once; the delivery can be retried without another charge). Refused for a run that '
  'was not charged (one that fell back to the offline templates).';
revoke all on function public.record_expansion_delivery(uuid, text, text, text, jsonb) from public, anon, authenticated;
grant execute on function public.record_expansion_delivery(uuid, text, text, text, jsonb) to service_role;
