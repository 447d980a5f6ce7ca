-- The credit functions: check_user_has_credits, consume_expansion_credit, add_paid_credits, and the
-- credit_charges ledger that makes consumption idempotent. Every balance change happens inside one
-- of these functions under a row lock on the user's usage_tracking row, never as read-then-write.
--
-- Errors raise their own SQLSTATE so PostgREST and the SDK can map them without reading text:
--   PT402 no credits remaining (HTTP 402)      PT404 unknown user / no usage row (HTTP 404)
--   22004 a required argument is null           22023 an argument is out of range
--   23505 an idempotency key or payment reference reused with different details
--   42501 an authenticated user asking about someone else

create table public.credit_charges (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  idempotency_key uuid,
  credit_type text not null,
  -- clock_timestamp, not now(): charges are taken under the user's row lock, so this orders them
  -- exactly as they happened even when many transactions started at the same moment.
  created_at timestamptz not null default clock_timestamp(),
  status text not null default 'captured',
  constraint credit_charges_idempotency_key_key unique (idempotency_key),
  constraint credit_charges_credit_type_check check (credit_type in ('free', 'paid')),
  constraint credit_charges_status_check check (status in ('held', 'captured', 'released'))
);

comment on table public.credit_charges is
  'Ledger of every consumed credit; idempotency_key (an execution id) makes a repeated charge a no-op.';
comment on column public.credit_charges.status is
  'captured when charged; an expansion run holds its credit (held) until it is captured, or released when the run fails.';

create index idx_credit_charges_user_created on public.credit_charges (user_id, created_at desc);

alter table public.credit_charges enable row level security;

create policy "Users can view their own credit charges"
  on public.credit_charges for select to authenticated
  using ((select auth.uid()) = user_id);

revoke all on table public.credit_charges from public, anon, authenticated;
grant select on table public.credit_charges to authenticated;
grant all on table public.credit_charges to service_role;

-- check_user_has_credits ---------------------------------------------------------------------------
create function public.check_user_has_credits(p_user_id uuid)
returns boolean
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  if p_user_id is null then
    raise exception using errcode = '22004', message = 'p_user_id must not be null';
  end if;
  -- Roles bound by RLS (authenticated) may only ask about themselves; service_role and other
  -- RLS-bypassing roles may ask about anyone.
  if p_user_id is distinct from (select auth.uid())
     and not exists (
       select 1 from pg_catalog.pg_roles r
       where r.rolname = current_user and (r.rolbypassrls or r.rolsuper)
     ) then
    raise exception using
      errcode = '42501',
      message = 'permission denied: you can only check your own credits',
      hint = 'Call with your own user id, or use the service role.';
  end if;
  return coalesce(
    (select u.free_expansions_remaining > 0 or u.paid_credits_remaining > 0
       from public.usage_tracking u
      where u.user_id = p_user_id),
    false
  );
end;
$$;

comment on function public.check_user_has_credits(uuid) is
  'True when the user has a free or paid credit left; false (never null) when they have none or no usage row.';
revoke all on function public.check_user_has_credits(uuid) from public, anon, authenticated;
grant execute on function public.check_user_has_credits(uuid) to authenticated, service_role;

-- consume_expansion_credit -------------------------------------------------------------------------
create function public.consume_expansion_credit(p_user_id uuid, p_idempotency_key uuid default null)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_usage public.usage_tracking%rowtype;
  v_charge public.credit_charges%rowtype;
  v_type text;
begin
  if p_user_id is null then
    raise exception using errcode = '22004', message = 'p_user_id must not be null';
  end if;

  -- Every consume and grant for this user queues on this lock, so what is read below stays true
  -- until commit.
  select * into v_usage
    from public.usage_tracking u
   where u.user_id = p_user_id
     for update;
  if not found then
    raise exception using
      errcode = 'PT404',
      message = 'No usage record for user',
      detail = pg_catalog.format('user_id %s has no usage_tracking row', p_user_id),
      hint = 'Create the user first: inserting into public.users creates the usage row.';
  end if;

  if p_idempotency_key is not null then
    select * into v_charge from public.credit_charges c where c.idempotency_key = p_idempotency_key;
    if found then
      if v_charge.user_id <> p_user_id then
        raise exception using
          errcode = '23505',
          message = 'idempotency key already used for another user',
          detail = pg_catalog.format('idempotency_key %s', p_idempotency_key);
      end if;
      -- A key whose run failed had its credit given back, and one still in flight may yet be: neither
      -- is "already charged".
      if v_charge.status = 'released' then
        raise exception using
          errcode = '55000',
          message = 'the run with this idempotency key failed and its credit was released',
          hint = 'Use a new key for a new attempt.';
      elsif v_charge.status = 'held' then
        raise exception using
          errcode = '55000',
          message = 'the run with this idempotency key is still in flight; its credit is held, not yet charged',
          hint = 'Ask again once the run has finished.';
      end if;
      return v_charge.credit_type;
    end if;
  end if;

  if v_usage.free_expansions_remaining > 0 then
    v_type := 'free';
  elsif v_usage.paid_credits_remaining > 0 then
    v_type := 'paid';
  else
    raise exception using
      errcode = 'PT402',
      message = 'No credits remaining',
      detail = pg_catalog.format('user_id %s has 0 free and 0 paid credits', p_user_id),
      hint = 'Purchase more credits; an admin grants them with add_paid_credits.';
  end if;

  update public.usage_tracking u
     set free_expansions_remaining = u.free_expansions_remaining - (v_type = 'free')::integer,
         paid_credits_remaining = u.paid_credits_remaining - (v_type = 'paid')::integer,
         total_expansions_used = u.total_expansions_used + 1,
         total_free_used = u.total_free_used + (v_type = 'free')::integer,
         total_paid_used = u.total_paid_used + (v_type = 'paid')::integer
   where u.user_id = p_user_id;

  insert into public.credit_charges (user_id, idempotency_key, credit_type)
  values (p_user_id, p_idempotency_key, v_type);

  return v_type;
end;
$$;

comment on function public.consume_expansion_credit(uuid, uuid) is
  'Takes one credit (free first, then paid) and returns ''free'' or ''paid''; PT402 when none is left. '
  'With p_idempotency_key, a repeat returns the first answer and charges nothing.';
revoke all on function public.consume_expansion_credit(uuid, uuid) from public, anon, authenticated;
grant execute on function public.consume_expansion_credit(uuid, uuid) to service_role;

-- add_paid_credits ---------------------------------------------------------------------------------
create function public.add_paid_credits(
  p_user_id uuid,
  p_credits integer,
  p_amount_usd numeric,
  p_bmc_reference text default null,
  p_verified_by text default 'admin',
  p_notes text default null
)
returns uuid
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_reference text := nullif(btrim(p_bmc_reference), '');
  v_receipt public.payment_receipts%rowtype;
begin
  if p_user_id is null then
    raise exception using errcode = '22004', message = 'p_user_id must not be null';
  end if;
  if p_credits is null or p_credits <= 0 then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('credits must be a positive integer, got %s', coalesce(p_credits::text, 'null'));
  end if;
  if p_amount_usd is null or p_amount_usd <= 0 then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('amount_usd must be a positive amount, got %s', coalesce(p_amount_usd::text, 'null'));
  end if;
  if p_amount_usd <> round(p_amount_usd, 2) or p_amount_usd >= 100000000 then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('amount_usd must have at most two decimal places and be below 100000000, got %s', p_amount_usd);
  end if;
  if not exists (select 1 from public.users u where u.id = p_user_id) then
    raise exception using
      errcode = 'PT404',
      message = 'User not found',
      detail = pg_catalog.format('no public.users row with id %s', p_user_id);
  end if;

  -- A payment reference is granted once. A concurrent grant of the same reference waits here for
  -- the first one to commit, then finds its receipt below.
  insert into public.payment_receipts
    (user_id, amount_usd, credits_purchased, bmc_reference, notes, verified_by, status, verified_at)
  values
    (p_user_id, p_amount_usd, p_credits, v_reference, p_notes, p_verified_by, 'verified', pg_catalog.now())
  on conflict (bmc_reference) do nothing
  returning * into v_receipt;

  if not found then
    select * into v_receipt from public.payment_receipts r where r.bmc_reference = v_reference;
    if v_receipt.user_id <> p_user_id
       or v_receipt.credits_purchased <> p_credits
       or v_receipt.amount_usd <> p_amount_usd then
      raise exception using
        errcode = '23505',
        message = pg_catalog.format('payment reference %s was already granted with different details', v_reference),
        detail = pg_catalog.format('existing receipt %s: user %s, %s credits, %s USD',
                                   v_receipt.id, v_receipt.user_id, v_receipt.credits_purchased, v_receipt.amount_usd),
        hint = 'Use a new reference for a new payment.';
    end if;
    return v_receipt.id;
  end if;

  update public.usage_tracking u
     set paid_credits_remaining = u.paid_credits_remaining + p_credits
   where u.user_id = p_user_id;
  if not found then
    raise exception using
      errcode = 'PT404',
      message = 'No usage record for user',
      detail = pg_catalog.format('user_id %s has no usage_tracking row', p_user_id);
  end if;

  return v_receipt.id;
end;
$$;

comment on function public.add_paid_credits(uuid, integer, numeric, text, text, text) is
  'Records a verified payment and adds its credits in one transaction; returns the receipt id. '
  'The same reference again returns the first receipt and grants nothing.';
revoke all on function public.add_paid_credits(uuid, integer, numeric, text, text, text)
  from public, anon, authenticated;
grant execute on function public.add_paid_credits(uuid, integer, numeric, text, text, text) to service_role;
