-- Keeps public.users in step with Supabase Auth: a new auth.users row (GitHub sign-in) creates the
-- profile with the same id, an e-mail change follows, and deleting the auth user deletes the profile.
-- Users who never touch Supabase Auth (externally minted JWTs, sub = users.id) are unaffected.

create function public.handle_auth_user_change()
returns trigger
language plpgsql
-- Runs as the owner: the auth server's role has no rights on public tables.
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    -- Anonymous and phone-only sign-ins carry no e-mail; they get no profile.
    if new.email is null then
      return new;
    end if;
    -- A different profile that already owns this e-mail is not silently taken over: the insert
    -- fails on users_email_key and Supabase Auth reports the sign-up as failed.
    insert into public.users (id, email, name)
    values (
      new.id,
      lower(new.email),
      left(coalesce(
        new.raw_user_meta_data ->> 'full_name',
        new.raw_user_meta_data ->> 'name',
        new.raw_user_meta_data ->> 'user_name'
      ), 200)
    )
    on conflict (id) do nothing;
    return new;
  elsif tg_op = 'UPDATE' then
    if new.email is not null and new.email is distinct from old.email then
      update public.users set email = lower(new.email) where id = new.id;
    end if;
    return new;
  else
    delete from public.users where id = old.id;
    return old;
  end if;
end;
$$;

comment on function public.handle_auth_user_change() is
  'Trigger on auth.users: creates, renames or deletes the matching public.users row.';
revoke all on function public.handle_auth_user_change() from public, anon, authenticated, service_role;

create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function public.handle_auth_user_change();

create trigger on_auth_user_email_changed
  after update of email on auth.users
  for each row execute function public.handle_auth_user_change();

create trigger on_auth_user_deleted
  after delete on auth.users
  for each row execute function public.handle_auth_user_change();
