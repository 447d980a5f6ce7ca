-- A profile belongs to a confirmed identity, and one person has one id.
--
-- Supabase Auth writes an auth.users row as soon as someone signs up, before they have shown they own
-- the address (email_confirmed_at is null until the link is clicked; a GitHub sign-in with an
-- unverified address stays unconfirmed). The sync trigger used to give that row a profile at once, so
-- a squatter who signed up with someone else's address held the profile that the service's GitHub
-- sign-in and the admins' grants reach by e-mail. Now:
--   * an auth user gets (or is linked to) a profile only once its e-mail address is confirmed: on the
--     insert when it arrives confirmed, else on the update that confirms it;
--   * a profile the service created (no auth identity: users.create on direct Postgres, the seed, an
--     externally minted JWT) is linked to the auth user that confirms its address by taking the auth
--     id: every foreign key that carries a user id cascades the change;
--   * but never to an auth user created before the profile. Supabase Auth keeps the FIRST registrant's
--     password when an address signs up again, and a confirmation does not change it: an auth user that
--     already existed when the service vouched for the address may be a squatter's pending sign-up (or
--     a squatter's older account adding the address), which the owner's click would confirm. Such a
--     confirmation still succeeds, but that auth user gets no profile, and a WARNING naming both ids
--     goes to the Postgres log. To give the person their profile, delete that auth user: their next
--     sign-up is newer than the profile and its confirmation links it. (On REST the service never lets
--     it come to this: vouching for an address deletes a pending sign-up that holds it.) The comparison
--     is between Supabase Auth's clock (auth.users.created_at) and the database's: they agree to
--     milliseconds on a Supabase project;
--   * addresses are ASCII (users_email_ascii): lower() folds some non-ASCII letters onto ASCII ones
--     (the Kelvin sign U+212A onto k, the dotted capital I U+0130 onto i), so a look-alike address
--     would reach another person's profile. A confirmed non-ASCII auth address fails (23514), and
--     addresses are lower-cased in the C collation (ASCII letters only, whatever the database locale);
--   * a profile that belongs to another auth identity is never merged: the sign-up or confirmation
--     fails (23505), which Supabase Auth reports as "Database error saving new user";
--   * profiles the old trigger gave to unconfirmed sign-ups are detached from them (re-keyed to a
--     fresh id, dated from the detachment, since the service may have merged into them what it vouched
--     for by e-mail): the auth user they are detached from is older, so it never takes them back; a
--     newer sign-up that confirms the address does.
-- Stored credentials are sealed to the profile id (AES-GCM associated data), so a re-keyed profile
-- loses them and the person stores them again (users.sign_in_with_github does for GitHub). Files in
-- the images bucket keep their paths (and public URLs) under the old id.

-- Foreign keys: a profile's id may change (only ever through private.relink_profile) -----------------
alter table public.ideas
  drop constraint ideas_user_id_fkey,
  add constraint ideas_user_id_fkey foreign key (user_id) references public.users (id)
    on update cascade on delete cascade;
alter table public.credentials
  drop constraint credentials_user_id_fkey,
  add constraint credentials_user_id_fkey foreign key (user_id) references public.users (id)
    on update cascade on delete cascade;
alter table public.executions
  drop constraint executions_user_id_fkey,
  add constraint executions_user_id_fkey foreign key (user_id) references public.users (id)
    on update cascade on delete cascade,
  drop constraint executions_selected_idea_fkey,
  add constraint executions_selected_idea_fkey foreign key (selected_idea_id, user_id)
    references public.ideas (id, user_id) on update cascade on delete set null (selected_idea_id);
alter table public.outputs
  drop constraint outputs_user_id_fkey,
  add constraint outputs_user_id_fkey foreign key (user_id) references public.users (id)
    on update cascade on delete cascade,
  drop constraint outputs_execution_fkey,
  add constraint outputs_execution_fkey foreign key (execution_id, user_id)
    references public.executions (id, user_id) on update cascade on delete cascade,
  drop constraint outputs_idea_fkey,
  add constraint outputs_idea_fkey foreign key (idea_id, user_id)
    references public.ideas (id, user_id) on update cascade on delete set null (idea_id);
alter table public.blog_posts
  drop constraint blog_posts_user_id_fkey,
  add constraint blog_posts_user_id_fkey foreign key (user_id) references public.users (id)
    on update cascade on delete cascade,
  drop constraint blog_posts_output_fkey,
  add constraint blog_posts_output_fkey foreign key (output_id, user_id)
    references public.outputs (id, user_id) on update cascade on delete cascade;
alter table public.usage_tracking
  drop constraint usage_tracking_user_id_fkey,
  add constraint usage_tracking_user_id_fkey foreign key (user_id) references public.users (id)
    on update cascade on delete cascade;
alter table public.payment_receipts
  drop constraint payment_receipts_user_id_fkey,
  add constraint payment_receipts_user_id_fkey foreign key (user_id) references public.users (id)
    on update cascade on delete cascade;
alter table public.credit_charges
  drop constraint credit_charges_user_id_fkey,
  add constraint credit_charges_user_id_fkey foreign key (user_id) references public.users (id)
    on update cascade on delete cascade;

-- (executions' transition trigger allows exactly one owner change: this cascade, once the old id is gone.)

-- Addresses: ASCII -------------------------------------------------------------------------------------
-- Checked for new and changed rows at once; validated for existing rows unless some are not ASCII (a
-- database that predates the rule), which are then reported and left as they are.
alter table public.users
  add constraint users_email_ascii check (email ~ '^[\x01-\x7f]+$') not valid;
do $ascii$
declare
  v_count bigint;
begin
  select count(*) into v_count from public.users u where u.email !~ '^[\x01-\x7f]+$';
  if v_count = 0 then
    alter table public.users validate constraint users_email_ascii;
  else
    raise warning using
      message = pg_catalog.format('%s profile(s) have a non-ASCII e-mail address; users_email_ascii is not validated', v_count),
      hint = 'Change or delete them, then: alter table public.users validate constraint users_email_ascii;';
  end if;
end
$ascii$;

comment on column public.users.email is 'Lower-case ASCII e-mail address, unique.';

-- Linking: a profile takes a new id, with everything it owns -----------------------------------------
create function private.relink_profile(p_from uuid, p_to uuid)
returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  if p_from is null or p_to is null then
    raise exception using errcode = '22004', message = 'relink_profile needs both ids';
  end if;
  -- Credentials are sealed to the id they were stored for: under the new id they could never be
  -- opened again, so they go, and the person stores them again.
  delete from public.credentials where user_id = p_from;
  -- on update cascade carries ideas, runs, outputs, posts and the balance along.
  update public.users set id = p_to where id = p_from;
  if not found then
    raise exception using errcode = 'PT404', message = pg_catalog.format('no profile %s to relink', p_from);
  end if;
  -- Money records follow too, whether or not a foreign key cascades them (they may outlive the user).
  update public.payment_receipts set user_id = p_to where user_id = p_from;
  update public.credit_charges set user_id = p_to where user_id = p_from;
end;
$$;

comment on function private.relink_profile(uuid, uuid) is
  'Re-keys a profile (and, by cascade, everything it owns) to a new id; drops its sealed credentials.';
revoke all on function private.relink_profile(uuid, uuid) from public, anon, authenticated, service_role;

-- The auth.users sync, for confirmed identities only ------------------------------------------------
create or replace function public.handle_auth_user_change()
returns trigger
language plpgsql
-- Runs as the owner: the auth server's role has no rights on public tables.
security definer
set search_path = ''
as $$
declare
  v_email text;
  v_profile uuid;
  v_profile_created timestamptz;
begin
  if tg_op = 'DELETE' then
    delete from public.users where id = old.id;
    return old;
  end if;
  -- Anonymous and phone-only sign-ins carry no e-mail, and an unconfirmed address is only a claim:
  -- neither gets a profile (the confirming update comes back here).
  if new.email is null or new.email_confirmed_at is null then
    return new;
  end if;
  -- Checked before lower-casing, which would fold a look-alike (U+212A, U+0130) onto an ASCII address.
  if new.email !~ '^[\x01-\x7f]+$' then
    raise exception using
      errcode = '23514',
      message = 'e-mail addresses must be ASCII',
      detail = pg_catalog.format('auth user %s has a non-ASCII address', new.id),
      hint = 'Internationalised domain names are written in their xn-- (punycode) form.';
  end if;
  v_email := pg_catalog.lower(new.email::text collate pg_catalog."C");
  if exists (select 1 from public.users u where u.id = new.id) then
    -- A confirmed change of address follows; an address another profile holds fails on users_email_key.
    update public.users set email = v_email where id = new.id and email is distinct from v_email;
    return new;
  end if;
  select u.id, u.created_at into v_profile, v_profile_created from public.users u where u.email = v_email for update;
  if v_profile is null then
    insert into public.users (id, email, name)
    values (
      new.id,
      v_email,
      left(coalesce(
        new.raw_user_meta_data ->> 'full_name',
        new.raw_user_meta_data ->> 'name',
        new.raw_user_meta_data ->> 'user_name'
      ), 200)
    );
  elsif exists (select 1 from auth.users a where a.id = v_profile) then
    raise exception using
      errcode = '23505',
      message = 'another account already owns this e-mail address',
      detail = pg_catalog.format('the profile of %s belongs to another auth identity', v_email),
      hint = 'Sign in with that account; a profile is never merged into another identity.';
  elsif new.created_at is null or new.created_at < v_profile_created then
    -- This auth identity predates the person the service vouched for: its password may be a squatter's
    -- (Supabase Auth keeps the first registrant's). The confirmation stands; the profile stays apart.
    raise warning using
      message = pg_catalog.format(
        'auth user %s confirmed the address of profile %s but was created before it: not linked', new.id, v_profile
      ),
      hint = 'Delete that auth user; the person signs up again, and that confirmation links the profile.';
  else
    -- The service created this person before they signed up: their profile becomes theirs, under the
    -- auth id (one person, one id).
    perform private.relink_profile(v_profile, new.id);
  end if;
  return new;
end;
$$;

comment on function public.handle_auth_user_change() is
  'Trigger on auth.users: creates (or links by e-mail, unless the auth user is older than the profile) the '
  'profile of a confirmed ASCII address, follows confirmed e-mail changes, deletes the profile with the auth user.';
revoke all on function public.handle_auth_user_change() from public, anon, authenticated, service_role;

-- The confirmation is an update of email_confirmed_at; an e-mail change, of email.
create or replace trigger on_auth_user_email_changed
  after update of email, email_confirmed_at on auth.users
  for each row execute function public.handle_auth_user_change();

-- Profiles the old trigger gave to unconfirmed sign-ups: detached, until the address is confirmed ---
do $detach$
declare
  v_id uuid;
  v_new uuid;
begin
  for v_id in
    select u.id from public.users u join auth.users a on a.id = u.id where a.email_confirmed_at is null
  loop
    v_new := gen_random_uuid();
    perform private.relink_profile(v_id, v_new);
    update public.users set created_at = now() where id = v_new;
  end loop;
end
$detach$;
