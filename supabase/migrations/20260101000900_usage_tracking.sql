-- public.usage_tracking: each user's credit balance (5 free, then paid) and lifetime counters. Exactly
-- one row per user, created by a trigger on public.users. Only the credit functions change it.

create table public.usage_tracking (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  free_expansions_remaining integer not null default 5,
  paid_credits_remaining integer not null default 0,
  total_expansions_used integer not null default 0,
  total_free_used integer not null default 0,
  total_paid_used integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint usage_tracking_user_id_key unique (user_id),
  constraint usage_tracking_free_check check (free_expansions_remaining >= 0),
  constraint usage_tracking_paid_check check (paid_credits_remaining >= 0),
  constraint usage_tracking_totals_check check (
    total_free_used >= 0 and total_paid_used >= 0
    and total_expansions_used = total_free_used + total_paid_used
  )
);

comment on table public.usage_tracking is 'Credit balance and lifetime usage per user (one row each).';
comment on column public.usage_tracking.free_expansions_remaining is 'Free expansions left; 5 at sign-up.';
comment on column public.usage_tracking.paid_credits_remaining is 'Paid credits left, granted by add_paid_credits.';

create trigger usage_tracking_set_updated_at
  before update on public.usage_tracking
  for each row execute function public.set_updated_at();

-- Every new user gets their balance row. The unique user_id makes this exactly one row even when
-- the same user is inserted by racing transactions (the loser's insert of users fails first).
create function public.create_usage_for_new_user()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  insert into public.usage_tracking (user_id)
  values (new.id)
  on conflict (user_id) do nothing;
  return new;
end;
$$;

comment on function public.create_usage_for_new_user() is
  'Trigger: gives every new public.users row its usage_tracking row with 5 free credits.';
revoke all on function public.create_usage_for_new_user() from public, anon, authenticated, service_role;

create trigger users_create_usage
  after insert on public.users
  for each row execute function public.create_usage_for_new_user();

alter table public.usage_tracking enable row level security;

create policy "Users can view their own usage"
  on public.usage_tracking for select to authenticated
  using ((select auth.uid()) = user_id);

revoke all on table public.usage_tracking from public, anon, authenticated;
grant select on table public.usage_tracking to authenticated;
grant all on table public.usage_tracking to service_role;
