-- public.blog_posts: the blog view of a blog_post output (1:1), with a per-user slug. Public posts are
-- readable by anyone, signed in or not. Posts are written by the pipeline (service role), which renders
-- the HTML from Markdown with raw HTML escaped; owners edit a post's metadata and visibility and may
-- delete it, but cannot write HTML that anonymous readers would be served.

create table public.blog_posts (
  id uuid primary key default gen_random_uuid(),
  output_id uuid,
  user_id uuid not null references public.users (id) on delete cascade,
  title text not null,
  slug text not null,
  markdown_content text not null,
  html_content text not null,
  meta_description text,
  tags text[] not null default array[]::text[],
  is_public boolean not null default true,
  published_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint blog_posts_output_id_key unique (output_id),
  constraint blog_posts_user_id_slug_key unique (user_id, slug),
  -- The output must be the same user's.
  constraint blog_posts_output_fkey foreign key (output_id, user_id)
    references public.outputs (id, user_id) on delete cascade,
  constraint blog_posts_title_length check (char_length(btrim(title)) >= 1 and char_length(title) <= 300),
  constraint blog_posts_slug_format check (
    slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and char_length(slug) <= 120
  ),
  constraint blog_posts_meta_description_length check (char_length(meta_description) <= 160),
  constraint blog_posts_tags_check check (cardinality(tags) <= 20)
);

comment on table public.blog_posts is 'Blog posts rendered from blog_post outputs; slug unique per user.';
comment on column public.blog_posts.slug is 'URL slug: lower-case words joined by hyphens, unique per user.';

create index idx_blog_posts_output on public.blog_posts (output_id, user_id);
create index idx_blog_posts_public on public.blog_posts (published_at desc) where is_public;

create trigger blog_posts_set_updated_at
  before update on public.blog_posts
  for each row execute function public.set_updated_at();

alter table public.blog_posts enable row level security;

create policy "Anyone can view public blog posts"
  on public.blog_posts for select to anon
  using (is_public);

create policy "Users can view their own and public blog posts"
  on public.blog_posts for select to authenticated
  using ((select auth.uid()) = user_id or is_public);

create policy "Users can update their own blog posts"
  on public.blog_posts for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);

create policy "Users can delete their own blog posts"
  on public.blog_posts for delete to authenticated
  using ((select auth.uid()) = user_id);

revoke all on table public.blog_posts from public, anon, authenticated;
grant select on table public.blog_posts to anon;
grant select, delete on table public.blog_posts to authenticated;
grant update (title, slug, meta_description, tags, is_public) on table public.blog_posts to authenticated;
grant all on table public.blog_posts to service_role;
