-- public.outputs: generated content (blog post, thread, repository, image) of a run. Written only
-- by the service role; each user reads their own.

create table public.outputs (
  id uuid primary key default gen_random_uuid(),
  execution_id uuid not null,
  user_id uuid not null references public.users (id) on delete cascade,
  idea_id uuid,
  format text not null,
  content jsonb not null,
  published boolean not null default false,
  publication_url text,
  publication_metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  published_at timestamptz,
  constraint outputs_id_user_id_key unique (id, user_id),
  -- Both references carry the owner, so an output can never join another user's run or idea.
  constraint outputs_execution_fkey foreign key (execution_id, user_id)
    references public.executions (id, user_id) on delete cascade,
  constraint outputs_idea_fkey foreign key (idea_id, user_id)
    references public.ideas (id, user_id) on delete set null (idea_id),
  constraint outputs_format_check check (format in ('blog_post', 'twitter_thread', 'github_repo', 'image')),
  constraint outputs_content_check check (jsonb_typeof(content) = 'object'),
  constraint outputs_publication_metadata_check check (jsonb_typeof(publication_metadata) = 'object'),
  -- "Published" means there is somewhere to go: no published row without its URL and time.
  constraint outputs_published_check check (
    not published or (publication_url is not null and published_at is not null)
  )
);

comment on table public.outputs is 'Generated content of an execution; content is format-specific JSON.';
comment on column public.outputs.publication_url is 'Where the output was published (GitHub repository URL, ...).';

create index idx_outputs_user_created on public.outputs (user_id, created_at desc);
create index idx_outputs_execution on public.outputs (execution_id, user_id);
create index idx_outputs_idea on public.outputs (idea_id, user_id);
create index idx_outputs_format on public.outputs (format);

alter table public.outputs enable row level security;

create policy "Users can view their own outputs"
  on public.outputs for select to authenticated
  using ((select auth.uid()) = user_id);

revoke all on table public.outputs from public, anon, authenticated;
grant select on table public.outputs to authenticated;
grant all on table public.outputs to service_role;
