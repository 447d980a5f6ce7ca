-- public.users: one profile per person (GitHub sign-in through Supabase Auth or an externally minted
-- JWT whose sub is users.id). Readable and partly editable by its owner; created by the service or by
-- the auth.users trigger.

create table public.users (
  id uuid primary key default gen_random_uuid(),
  email text not null,
  name text,
  timezone text not null default 'UTC',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint users_email_key unique (email),
  constraint users_email_format check (
    email ~ '^[^@[:space:]]+@[^@[:space:]]+$'
    and email = lower(email)
    and char_length(email) <= 320
  ),
  constraint users_name_length check (char_length(name) <= 200),
  constraint users_timezone_length check (char_length(timezone) between 1 and 64)
);

comment on table public.users is 'User profiles; id equals auth.users.id for Supabase Auth users.';
comment on column public.users.email is 'Lower-case e-mail address, unique.';
comment on column public.users.timezone is 'IANA time zone name, e.g. Europe/Paris.';

create trigger users_set_updated_at
  before update on public.users
  for each row execute function public.set_updated_at();

alter table public.users enable row level security;

create policy "Users can view their own profile"
  on public.users for select to authenticated
  using ((select auth.uid()) = id);

create policy "Users can update their own profile"
  on public.users for update to authenticated
  using ((select auth.uid()) = id)
  with check ((select auth.uid()) = id);

revoke all on table public.users from public, anon, authenticated;
grant select on table public.users to authenticated;
-- The e-mail address is the identity; only the service (or Supabase Auth) changes it.
grant update (name, timezone) on table public.users to authenticated;
grant all on table public.users to service_role;
