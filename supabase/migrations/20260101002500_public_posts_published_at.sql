-- A public blog post always has a publication time, so the public listing's keyset never meets a NULL.
--
-- blog_posts.list_public pages by (published_at desc, id desc); a later page asks for `(published_at, id)
-- < (v, id)`. published_at was nullable and set only by the pipeline. A public post without one sorts
-- first (DESC puts NULLs first) and no row comparison with a NULL is true: such posts were never on any
-- page but the first, and a first page ending on one handed out a cursor that matched nothing, so the
-- walk stopped there and every other public post was silently left out. Rather than sort public posts
-- by another column (created_at is not when a post became public) or make published_at NOT NULL (a
-- private post was never published), the rule is stated where it holds:
--   * blog_posts_public_has_published_at: a public post has published_at (a CHECK; private ones may not);
--   * private.stamp_published_at: a post made public (inserted public, or is_public set to true) without a
--     publication time gets now(). An explicit published_at is kept; clearing it on a public post is refused
--     by the CHECK rather than silently re-stamped;
--   * posts already public without one get their created_at (the nearest thing to when they appeared).

-- Backfill before the CHECK is added.
update public.blog_posts set published_at = created_at where is_public and published_at is null;

create function private.stamp_published_at()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if new.is_public and new.published_at is null then
    new.published_at := pg_catalog.now();
  end if;
  return new;
end;
$$;

comment on function private.stamp_published_at() is
  'Trigger: a blog post inserted public, or made public, without a publication time is published now.';
revoke all on function private.stamp_published_at() from public, anon, authenticated, service_role;

-- Owners make their posts public with `update ... set is_public = true` (their column grant): the trigger
-- runs with their rights and writes only the row they are updating.
create trigger blog_posts_stamp_published_at
  before insert or update of is_public on public.blog_posts
  for each row execute function private.stamp_published_at();

alter table public.blog_posts
  add constraint blog_posts_public_has_published_at check (not is_public or published_at is not null);

comment on column public.blog_posts.published_at is
  'When the post was published; set (now) when it is made public without one, and never NULL on a public post.';
