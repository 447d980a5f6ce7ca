-- public.executions: the audit trail of every pipeline run. Written only by the service role;
-- each user reads their own.

create table public.executions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  selected_idea_id uuid,
  judge_reasoning text,
  judge_score integer,
  format_chosen text,
  format_reasoning text,
  status text not null default 'running',
  error_message text,
  error_step text,
  tokens_used integer not null default 0,
  duration_seconds integer,
  started_at timestamptz not null default now(),
  completed_at timestamptz,
  constraint executions_id_user_id_key unique (id, user_id),
  -- The selected idea must belong to the same user; deleting it clears only the idea column.
  constraint executions_selected_idea_fkey foreign key (selected_idea_id, user_id)
    references public.ideas (id, user_id) on delete set null (selected_idea_id),
  constraint executions_judge_score_check check (judge_score >= 0 and judge_score <= 100),
  constraint executions_format_chosen_check check (
    format_chosen in ('blog_post', 'twitter_thread', 'github_repo', 'image')
  ),
  constraint executions_status_check check (status in ('running', 'completed', 'failed', 'partial')),
  constraint executions_tokens_used_check check (tokens_used >= 0),
  constraint executions_duration_seconds_check check (duration_seconds >= 0),
  constraint executions_error_step_length check (char_length(error_step) <= 64),
  -- A finished run has a finish time, a running one does not.
  constraint executions_completed_at_check check ((status = 'running') = (completed_at is null)),
  constraint executions_completed_after_start check (completed_at >= started_at)
);

comment on table public.executions is 'One row per pipeline run: judge, format choice, status, tokens, errors.';
comment on column public.executions.status is 'running | completed | failed | partial.';
comment on column public.executions.error_step is 'The pipeline stage that failed, when status is failed or partial.';

create index idx_executions_user_started on public.executions (user_id, started_at desc);
create index idx_executions_status on public.executions (status);
create index idx_executions_selected_idea on public.executions (selected_idea_id, user_id);

alter table public.executions enable row level security;

create policy "Users can view their own executions"
  on public.executions for select to authenticated
  using ((select auth.uid()) = user_id);

revoke all on table public.executions from public, anon, authenticated;
grant select on table public.executions to authenticated;
grant all on table public.executions to service_role;
