-- public.credentials: per-user secrets (GitHub OAuth token, API keys), stored only as AES-256-GCM
-- ciphertext produced by the SDK. One row per (user, provider).

create table public.credentials (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  provider text not null,
  encrypted_value text not null,
  is_active boolean not null default true,
  validation_status text not null default 'not_checked',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint credentials_user_id_provider_key unique (user_id, provider),
  constraint credentials_provider_check check (
    provider in ('openai', 'anthropic', 'github', 'twitter', 'replicate')
  ),
  constraint credentials_encrypted_value_length check (char_length(encrypted_value) between 1 and 16384),
  constraint credentials_validation_status_check check (
    validation_status in ('valid', 'invalid', 'not_checked')
  )
);

comment on table public.credentials is 'Encrypted per-user credentials; the plaintext never reaches the database.';
comment on column public.credentials.encrypted_value is 'AES-256-GCM envelope (JSON text) written by the SDK.';

create trigger credentials_set_updated_at
  before update on public.credentials
  for each row execute function public.set_updated_at();

alter table public.credentials enable row level security;

create policy "Users can view their own credentials"
  on public.credentials for select to authenticated
  using ((select auth.uid()) = user_id);

create policy "Users can create their own credentials"
  on public.credentials for insert to authenticated
  with check ((select auth.uid()) = user_id);

create policy "Users can update their own credentials"
  on public.credentials for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);

create policy "Users can delete their own credentials"
  on public.credentials for delete to authenticated
  using ((select auth.uid()) = user_id);

revoke all on table public.credentials from public, anon, authenticated;
grant select, delete on table public.credentials to authenticated;
grant insert (id, user_id, provider, encrypted_value, is_active, validation_status)
  on table public.credentials to authenticated;
-- PostgREST's upsert (on_conflict=user_id,provider) also assigns the conflict columns, so they are
-- updatable too; the policy's WITH CHECK keeps user_id the caller's own.
grant update (user_id, provider, encrypted_value, is_active, validation_status)
  on table public.credentials to authenticated;
grant all on table public.credentials to service_role;
