-- public.payment_receipts: the audit trail of paid credits (Buy Me a Coffee payments verified by an
-- admin). Written only through add_paid_credits; a payment reference is granted at most once.

create table public.payment_receipts (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  amount_usd numeric(10, 2) not null,
  credits_purchased integer not null,
  bmc_reference text,
  notes text,
  verified_by text,
  status text not null default 'verified',
  created_at timestamptz not null default now(),
  verified_at timestamptz default now(),
  constraint payment_receipts_bmc_reference_key unique (bmc_reference),
  constraint payment_receipts_amount_usd_check check (amount_usd > 0),
  constraint payment_receipts_credits_purchased_check check (credits_purchased > 0),
  constraint payment_receipts_bmc_reference_length check (
    char_length(btrim(bmc_reference)) >= 1 and char_length(bmc_reference) <= 200
  ),
  constraint payment_receipts_notes_length check (char_length(notes) <= 2000),
  constraint payment_receipts_verified_by_length check (char_length(verified_by) <= 200),
  constraint payment_receipts_status_check check (status in ('pending', 'verified', 'refunded'))
);

comment on table public.payment_receipts is 'Payments verified by an admin and the credits they granted.';
comment on column public.payment_receipts.bmc_reference is 'Buy Me a Coffee reference; unique, so a payment is granted once.';

create index idx_payment_receipts_user_created on public.payment_receipts (user_id, created_at desc);

alter table public.payment_receipts enable row level security;

create policy "Users can view their own payment receipts"
  on public.payment_receipts for select to authenticated
  using ((select auth.uid()) = user_id);

revoke all on table public.payment_receipts from public, anon, authenticated;
grant select on table public.payment_receipts to authenticated;
grant all on table public.payment_receipts to service_role;
