-- public.ideas: the raw ideas a user keeps, and the status machine they move through
-- (pending -> expanded, pending -> archived, expanded -> archived), enforced here.

create table public.ideas (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  title text not null,
  description text,
  bullets jsonb not null default '[]'::jsonb,
  external_links jsonb not null default '[]'::jsonb,
  status text not null default 'pending',
  priority_score integer not null default 0,
  last_evaluated_at timestamptz,
  times_evaluated integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- Lets outputs and executions reference (idea, owner) pairs, so a row can never point at
  -- another user's idea.
  constraint ideas_id_user_id_key unique (id, user_id),
  constraint ideas_status_check check (status in ('pending', 'expanded', 'archived')),
  constraint ideas_priority_score_check check (priority_score >= 0 and priority_score <= 100),
  constraint ideas_title_length check (char_length(btrim(title)) >= 1 and char_length(title) <= 200),
  constraint ideas_description_length check (char_length(description) <= 10000),
  constraint ideas_bullets_check check (
    case when jsonb_typeof(bullets) = 'array' then jsonb_array_length(bullets) <= 50 else false end
  ),
  constraint ideas_external_links_check check (
    case when jsonb_typeof(external_links) = 'array' then jsonb_array_length(external_links) <= 20 else false end
  ),
  constraint ideas_times_evaluated_check check (times_evaluated >= 0)
);

comment on table public.ideas is 'Raw ideas submitted for expansion.';
comment on column public.ideas.bullets is 'JSON array of bullet points (at most 50).';
comment on column public.ideas.external_links is 'JSON array of links (at most 20).';
comment on column public.ideas.status is 'pending -> expanded | archived; expanded -> archived.';
comment on column public.ideas.priority_score is 'Judge score, 0-100.';

create index idx_ideas_user_status on public.ideas (user_id, status);
create index idx_ideas_created on public.ideas (created_at desc);
create index idx_ideas_priority on public.ideas (priority_score desc);

create trigger ideas_set_updated_at
  before update on public.ideas
  for each row execute function public.set_updated_at();

create function public.enforce_idea_status_transition()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if new.status is distinct from old.status and not (
    (old.status = 'pending' and new.status in ('expanded', 'archived'))
    or (old.status = 'expanded' and new.status = 'archived')
  ) then
    raise exception using
      errcode = '23514',
      message = pg_catalog.format('invalid idea status transition: %s -> %s', old.status, new.status),
      detail = pg_catalog.format('idea %s', old.id),
      hint = 'Allowed transitions: pending -> expanded, pending -> archived, expanded -> archived.';
  end if;
  -- Users archive their ideas; marking one expanded is the pipeline's (service role's) doing.
  if new.status = 'expanded' and old.status <> 'expanded' and (select auth.role()) = 'authenticated' then
    raise exception using
      errcode = '42501',
      message = 'only an expansion run marks an idea expanded',
      hint = 'Expand the idea through the pipeline; users may archive ideas.';
  end if;
  return new;
end;
$$;

comment on function public.enforce_idea_status_transition() is
  'Trigger: rejects idea status changes outside pending -> expanded/archived and expanded -> archived.';
revoke all on function public.enforce_idea_status_transition() from public, anon, authenticated, service_role;

create trigger ideas_status_transition
  before update of status on public.ideas
  for each row execute function public.enforce_idea_status_transition();

alter table public.ideas enable row level security;

create policy "Users can view their own ideas"
  on public.ideas for select to authenticated
  using ((select auth.uid()) = user_id);

create policy "Users can create their own ideas"
  on public.ideas for insert to authenticated
  with check ((select auth.uid()) = user_id);

create policy "Users can update their own ideas"
  on public.ideas for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);

create policy "Users can delete their own ideas"
  on public.ideas for delete to authenticated
  using ((select auth.uid()) = user_id);

revoke all on table public.ideas from public, anon, authenticated;
grant select, delete on table public.ideas to authenticated;
-- New ideas start pending; judge fields belong to the pipeline (service role).
grant insert (id, user_id, title, description, bullets, external_links) on table public.ideas to authenticated;
grant update (title, description, bullets, external_links, status) on table public.ideas to authenticated;
grant all on table public.ideas to service_role;
