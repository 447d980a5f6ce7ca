-- Input limits the database enforces, so what a user stores (and so what one credit sends a model, and
-- what storage holds) is bounded whoever writes it:
--
--   * ideas: each bullet a non-blank string of at most 1,000 characters, each link of at most 2,000 (with the
--     existing 200-character title, 10,000-character description, 50 bullets and 20 links, an idea is at
--     most about 100,000 characters);
--   * blog posts: each tag non-blank and at most 50 characters (20 tags, as before);
--   * the images bucket: at most 1,000 objects in a user's folder (its 5 MB file size limit stands);
--   * idempotency keys belong to one user: unique per (user, key) for runs and for charges, so one user's
--     key can neither block nor reveal another user's run. start_expansion and consume_expansion_credit
--     look keys up per user.

-- Element checks: CHECK constraints cannot hold subqueries, so these immutable helpers do it. Whoever writes
-- the row evaluates them (PostgreSQL checks EXECUTE on a constraint's functions), hence the grants.
create function private.jsonb_strings_within(p_items jsonb, p_max_chars integer)
returns boolean
language sql
immutable
security invoker
set search_path = ''
as $$
  select case when pg_catalog.jsonb_typeof(p_items) = 'array' then not exists (
           select 1 from pg_catalog.jsonb_array_elements(p_items) as e(item)
            where pg_catalog.jsonb_typeof(e.item) <> 'string'
               or pg_catalog.char_length(e.item #>> '{}') > p_max_chars
               or (e.item #>> '{}') !~ '[^[:space:]]')
         else false end;
$$;

comment on function private.jsonb_strings_within(jsonb, integer) is
  'True when every element of a JSON array is a non-blank string of at most p_max_chars characters.';
revoke all on function private.jsonb_strings_within(jsonb, integer) from public, anon, authenticated;
grant execute on function private.jsonb_strings_within(jsonb, integer) to authenticated, service_role;

create function private.texts_within(p_items text[], p_max_chars integer)
returns boolean
language sql
immutable
security invoker
set search_path = ''
as $$
  -- One dimension, counted from 1: a 2-D array passes unnest() and cardinality() yet is no list of tags,
  -- and one such row would break every reader of the table (each expects a list of strings).
  select coalesce(pg_catalog.array_ndims(p_items), 1) = 1
     and coalesce(pg_catalog.array_lower(p_items, 1), 1) = 1
     and not exists (
       select 1 from pg_catalog.unnest(p_items) as t(item)
        where t.item is null or pg_catalog.char_length(t.item) > p_max_chars or t.item !~ '[^[:space:]]');
$$;

comment on function private.texts_within(text[], integer) is
  'True when a text array is one-dimensional (from 1) and every element is non-null, non-blank and at most '
  'p_max_chars characters.';
revoke all on function private.texts_within(text[], integer) from public, anon, authenticated;
grant execute on function private.texts_within(text[], integer) to authenticated, service_role;

alter table public.ideas
  add constraint ideas_bullets_items_check check (private.jsonb_strings_within(bullets, 1000)),
  add constraint ideas_external_links_items_check check (private.jsonb_strings_within(external_links, 2000));

comment on column public.ideas.bullets is 'JSON array of at most 50 bullet points, each a non-blank string of at most 1000 characters.';
comment on column public.ideas.external_links is 'JSON array of at most 20 links, each a non-blank string of at most 2000 characters.';

alter table public.blog_posts
  add constraint blog_posts_tags_items_check check (private.texts_within(tags, 50));

comment on column public.blog_posts.tags is 'At most 20 tags, each non-blank and at most 50 characters.';

-- The images bucket: a bounded number of objects per user ----------------------------------------------------
-- Counted under a per-user transaction lock, so parallel uploads cannot all pass at the last free slot.
-- Security invoker: the count sees only the caller's own folder, through their select policy. The service
-- role (the pipeline) bypasses RLS and so this cap.
create function private.image_slot_free(p_folder text)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  -- The count must see uploads committed while this one waited for the lock: only a statement snapshot
  -- (read committed, what PostgREST and Storage use) does; an older transaction snapshot would not.
  if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
    raise exception using
      errcode = '55000',
      message = 'uploads to the images bucket run at read committed isolation',
      hint = 'The per-user object cap is counted under a lock; an older snapshot would miss other uploads.';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(2026010121, pg_catalog.hashtext(p_folder));
  return (select count(*) from storage.objects o
           where o.bucket_id = 'images' and o.name like p_folder || '/%') < 1000;
end;
$$;

comment on function private.image_slot_free(text) is
  'Whether the user''s folder in the images bucket holds fewer than 1000 objects (serialised per folder).';
revoke all on function private.image_slot_free(text) from public, anon, authenticated;
grant execute on function private.image_slot_free(text) to authenticated;

drop policy "Users can upload images to their own folder" on storage.objects;
create policy "Users can upload images to their own folder"
  on storage.objects for insert to authenticated
  with check (
    bucket_id = 'images'
    and (storage.foldername(name))[1] = (select auth.uid()::text)
    and private.image_slot_free((select auth.uid()::text))
  );

-- Idempotency keys, per user ----------------------------------------------------------------------------------
alter table public.executions drop constraint executions_idempotency_key_key;
alter table public.executions
  add constraint executions_user_id_idempotency_key_key unique (user_id, idempotency_key);

comment on column public.executions.idempotency_key is
  'Caller-chosen key, unique per user: expanding again with it returns this run.';

alter table public.credit_charges drop constraint credit_charges_idempotency_key_key;
alter table public.credit_charges
  add constraint credit_charges_user_id_idempotency_key_key unique (user_id, idempotency_key);
-- A run's charge is found by (user, execution id) too (settle, claim, the transition trigger): this index.

comment on column public.credit_charges.idempotency_key is
  'The execution id for a run''s credit, or a caller''s key; unique per user, so a repeat is a no-op.';
