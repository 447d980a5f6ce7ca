-- Money records: what a payment reference means, how large a grant and a balance may be, reports that
-- cannot overflow, and financial rows that outlive the user they belong to.
--
--   * A reference is one payment: stored trimmed of blanks (spaces, tabs, line breaks), unique case-insensitively (`bmc-1` = ` BMC-1 `), and
--     required (a grant without one could not be told from its own retry).
--   * A grant adds at most 100,000 credits; a balance holds at most 1,000,000 free and 1,000,000 paid
--     (22023 from add_paid_credits, a CHECK for every other writer). Reports sum in bigint.
--   * Deleting a user keeps their payment receipts and charged credits, anonymised: they move to a fresh
--     random id that links them to each other and to nobody (no e-mail, name or login is left). Credits
--     that were only held by a run in flight, or released, were never charged and go with the user.
--     An operator keeps the books (amount, credits, reference, dates, refunds); the person is erased.
--   * A deleted user who signs up again with the same e-mail gets back only the free credits they had
--     left, never a new 5: private.deleted_accounts keeps a SHA-256 digest of the address and that count.

-- private.deleted_accounts --------------------------------------------------------------------------------
create table private.deleted_accounts (
  email_sha256 text primary key,
  free_expansions_remaining integer not null,
  deleted_at timestamptz not null default now()
);

comment on table private.deleted_accounts is
  'One row per deleted e-mail address (its SHA-256, never the address): the free credits left at deletion, '
  'which is all a new account with that address starts with.';

alter table private.deleted_accounts enable row level security;
revoke all on table private.deleted_accounts from public, anon, authenticated;
-- The service role creates and deletes users; the triggers below run as the caller.
grant select, insert, update on table private.deleted_accounts to service_role;

create function private.email_digest(p_email text)
returns text
language sql
immutable
strict
security invoker
set search_path = ''
as $$
  select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.lower(pg_catalog.btrim(p_email)), 'UTF8')), 'hex');
$$;

comment on function private.email_digest(text) is 'SHA-256 (hex) of a trimmed, lower-cased e-mail address.';
revoke all on function private.email_digest(text) from public, anon, authenticated;
grant execute on function private.email_digest(text) to service_role;

-- payment references ----------------------------------------------------------------------------------------
update public.payment_receipts set bmc_reference = pg_catalog.btrim(bmc_reference, E' \t\n\r\f\x0B')
 where bmc_reference <> pg_catalog.btrim(bmc_reference, E' \t\n\r\f\x0B');
-- References that differ only in case were two receipts under the old rule: the later ones are renamed
-- (their text kept in notes) so that the case-insensitive rule below holds for every row.
update public.payment_receipts r
   set notes = left(concat_ws(E'\n', r.notes, 'original reference: ' || r.bmc_reference), 2000),
       bmc_reference = left(r.bmc_reference, 180) || '-dup-' || left(r.id::text, 8)
 where exists (select 1 from public.payment_receipts o
                where lower(o.bmc_reference) = lower(r.bmc_reference)
                  and (o.created_at, o.id) < (r.created_at, r.id));
alter table public.payment_receipts drop constraint payment_receipts_bmc_reference_key;
create unique index payment_receipts_bmc_reference_key on public.payment_receipts (lower(bmc_reference));
-- A reference is plain ASCII: letters, digits and . _ : / # -. Unicode look-alikes (a no-break space, a
-- zero-width space, a full-width or Cyrillic letter, a bidi override) would otherwise make one payment
-- several "different" references.
-- It subsumes the old length rule (1-200 characters after trimming), which goes. Older references it
-- would refuse keep their text in notes and get a plain one derived from it, so the rule holds for every
-- row (a restore loads rows under every constraint, so a tolerated exception would make backups unloadable).
update public.payment_receipts r
   set notes = left(concat_ws(E'\n', r.notes, 'original reference: ' || r.bmc_reference), 2000),
       bmc_reference = 'legacy-' || left(pg_catalog.md5(r.bmc_reference), 16)
 where r.bmc_reference !~ '^[A-Za-z0-9._:/#-]{1,200}$';
alter table public.payment_receipts
  drop constraint payment_receipts_bmc_reference_length,
  add constraint payment_receipts_bmc_reference_format check (bmc_reference ~ '^[A-Za-z0-9._:/#-]{1,200}$'),
  add constraint payment_receipts_credits_purchased_max check (credits_purchased <= 100000);

comment on column public.payment_receipts.bmc_reference is
  'Payment reference (e.g. Buy Me a Coffee''s): ASCII letters, digits and . _ : / # -, stored trimmed; unique '
  'ignoring case, so a payment is granted once.';

-- bounded balances --------------------------------------------------------------------------------------------
alter table public.usage_tracking
  add constraint usage_tracking_balance_max check (
    free_expansions_remaining <= 1000000 and paid_credits_remaining <= 1000000
  );

-- financial rows outlive the user ---------------------------------------------------------------------------
alter table public.payment_receipts drop constraint payment_receipts_user_id_fkey;
alter table public.credit_charges drop constraint credit_charges_user_id_fkey;

comment on column public.payment_receipts.user_id is
  'The paying user; once they are deleted, a random id shared by their receipts and charges and no one else.';
comment on column public.credit_charges.user_id is
  'The charged user; once they are deleted, a random id shared by their receipts and charges and no one else.';

create function private.keep_financial_rows()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_anonymous uuid := pg_catalog.gen_random_uuid();
  v_free integer;
begin
  -- The run functions' lock order (idea -> execution -> receipt -> usage), so nothing deadlocks; once the
  -- balance is locked no charge or grant for this user can start, and those in progress have committed.
  perform 1 from public.ideas i where i.user_id = old.id for update;
  perform 1 from public.executions e where e.user_id = old.id for update;
  perform 1 from public.payment_receipts r where r.user_id = old.id for update;
  select u.free_expansions_remaining into v_free from public.usage_tracking u where u.user_id = old.id for update;

  insert into private.deleted_accounts as d (email_sha256, free_expansions_remaining)
  values (private.email_digest(old.email), coalesce(v_free, 0))
  on conflict (email_sha256) do update
    set free_expansions_remaining = excluded.free_expansions_remaining, deleted_at = pg_catalog.now();

  -- Held (a run in flight, deleted with the user) and released credits were never charged.
  delete from public.credit_charges c where c.user_id = old.id and c.status <> 'captured';
  update public.credit_charges c set user_id = v_anonymous where c.user_id = old.id;
  update public.payment_receipts r set user_id = v_anonymous where r.user_id = old.id;
  return old;
end;
$$;

comment on function private.keep_financial_rows() is
  'Trigger: before a user is deleted, moves their receipts and charged credits to a fresh anonymous id, drops '
  'uncharged holds, and remembers the free credits left under a digest of the e-mail address.';
revoke all on function private.keep_financial_rows() from public, anon, authenticated, service_role;

create trigger users_keep_financial_rows
  before delete on public.users
  for each row execute function private.keep_financial_rows();

-- A new account starts with 5 free credits, or with what a deleted account of the same address had left.
create or replace function public.create_usage_for_new_user()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_free integer;
begin
  select least(5, d.free_expansions_remaining) into v_free
    from private.deleted_accounts d
   where d.email_sha256 = private.email_digest(new.email);
  insert into public.usage_tracking (user_id, free_expansions_remaining)
  values (new.id, coalesce(v_free, 5))
  on conflict (user_id) do nothing;
  return new;
end;
$$;

comment on function public.create_usage_for_new_user() is
  'Trigger: gives every new public.users row its usage_tracking row: 5 free credits, or for an e-mail address '
  'whose account was deleted, the free credits it had left.';
revoke all on function public.create_usage_for_new_user() from public, anon, authenticated, service_role;

-- add_paid_credits --------------------------------------------------------------------------------------------
create or replace function public.add_paid_credits(
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
  v_reference text := nullif(pg_catalog.btrim(p_bmc_reference, E' \t\n\r\f\x0B'), '');
  v_receipt public.payment_receipts%rowtype;
  v_usage public.usage_tracking%rowtype;
begin
  if p_user_id is null then
    raise exception using errcode = '22004', message = 'p_user_id must not be null';
  end if;
  if p_credits is null or p_credits <= 0 or p_credits > 100000 then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('credits must be a positive integer of at most 100000 per grant, got %s',
                                  coalesce(p_credits::text, 'null')),
      hint = 'A larger purchase is several payments, each with its own reference.';
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
  if v_reference is null then
    raise exception using
      errcode = '22023',
      message = 'a payment reference is required (not blank)',
      hint = 'Pass the Buy Me a Coffee reference: it is what makes a retried grant a no-op.';
  end if;
  if v_reference !~ '^[A-Za-z0-9._:/#-]{1,200}$' then
    raise exception using
      errcode = '22023',
      message = 'a payment reference is 1-200 ASCII letters, digits and . _ : / # -',
      detail = 'Look-alike characters (a no-break or zero-width space, a full-width or Cyrillic letter) would let '
               'one payment be granted twice under "different" references.',
      hint = 'Copy the reference exactly as the payment provider shows it, e.g. BMC-12345.';
  end if;
  if not exists (select 1 from public.users u where u.id = p_user_id) then
    raise exception using
      errcode = 'PT404',
      message = 'User not found',
      detail = pg_catalog.format('no public.users row with id %s', p_user_id);
  end if;

  -- Every grant, charge and deletion for this user queues here, so the balance read stays true.
  v_usage := private.lock_usage(p_user_id);

  -- A payment reference is granted once, whatever its case. A concurrent grant of the same reference waits
  -- here for the first one to commit, then finds its receipt below.
  insert into public.payment_receipts
    (user_id, amount_usd, credits_purchased, bmc_reference, notes, verified_by, status, verified_at)
  values
    (p_user_id, p_amount_usd, p_credits, v_reference, p_notes, p_verified_by, 'verified', pg_catalog.now())
  on conflict ((lower(bmc_reference))) do nothing
  returning * into v_receipt;

  if not found then
    select * into v_receipt from public.payment_receipts r where lower(r.bmc_reference) = lower(v_reference);
    if v_receipt.user_id <> p_user_id
       or v_receipt.credits_purchased <> p_credits
       or v_receipt.amount_usd <> p_amount_usd then
      raise exception using
        errcode = '23505',
        message = pg_catalog.format('payment reference %s was already granted with different details', v_reference),
        detail = pg_catalog.format('existing receipt %s: %s credits, %s USD',
                                   v_receipt.id, v_receipt.credits_purchased, v_receipt.amount_usd),
        hint = 'Use a new reference for a new payment.';
    end if;
    return v_receipt.id;
  end if;

  if v_usage.paid_credits_remaining::bigint + p_credits > 1000000 then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('the paid balance would be %s; it holds at most 1000000 credits',
                                  v_usage.paid_credits_remaining::bigint + p_credits),
      detail = pg_catalog.format('user %s has %s paid credits', p_user_id, v_usage.paid_credits_remaining),
      hint = 'Grant once the user has spent some, or refund the payment.';
  end if;

  update public.usage_tracking u
     set paid_credits_remaining = u.paid_credits_remaining + p_credits
   where u.user_id = p_user_id;

  return v_receipt.id;
end;
$$;

comment on function public.add_paid_credits(uuid, integer, numeric, text, text, text) is
  'Records a verified payment and adds its credits (1-100000; a paid balance holds at most 1000000) in one '
  'transaction; returns the receipt id. A reference is required; the same reference again (trimmed, any case) '
  'returns the first receipt and grants nothing.';
revoke all on function public.add_paid_credits(uuid, integer, numeric, text, text, text)
  from public, anon, authenticated;
grant execute on function public.add_paid_credits(uuid, integer, numeric, text, text, text) to service_role;

-- reports ----------------------------------------------------------------------------------------------------
-- total_remaining was free + paid in integer: one large balance made the report fail for everyone.
drop function public.report_user_summary();
create function public.report_user_summary()
returns table (email text, ideas bigint, outputs bigint, free_remaining integer, paid_remaining integer,
               total_remaining bigint, created_at timestamptz)
language sql stable security invoker set search_path = ''
as $$
  select u.email,
         (select count(*) from public.ideas i where i.user_id = u.id),
         (select count(*) from public.outputs o where o.user_id = u.id),
         t.free_expansions_remaining, t.paid_credits_remaining,
         coalesce(t.free_expansions_remaining::bigint + t.paid_credits_remaining, 0),
         u.created_at
    from public.users u
    left join public.usage_tracking t on t.user_id = u.id
   order by u.created_at desc;
$$;

-- A deleted user's payments stay in the books, under their anonymous id.
create or replace function public.report_payments()
returns table (email text, amount_usd numeric, credits_purchased integer, bmc_reference text, status text,
               verified_at timestamptz, receipt_id uuid)
language sql stable security invoker set search_path = ''
as $$
  select coalesce(u.email, '(deleted user ' || r.user_id || ')'), r.amount_usd, r.credits_purchased,
         r.bmc_reference, r.status, r.verified_at, r.id
    from public.payment_receipts r left join public.users u on u.id = r.user_id
   order by r.verified_at desc nulls last, r.created_at desc;
$$;

create or replace function public.report_payment_summary()
returns table (email text, payments bigint, total_credits bigint, total_spent numeric)
language sql stable security invoker set search_path = ''
as $$
  select coalesce(u.email, '(deleted user ' || r.user_id || ')'), count(*), sum(r.credits_purchased::bigint),
         sum(r.amount_usd)
    from public.payment_receipts r left join public.users u on u.id = r.user_id
   where r.status = 'verified'
   group by r.user_id, u.email
   order by sum(r.amount_usd) desc, 1;
$$;

revoke all on function public.report_user_summary(), public.report_payments(), public.report_payment_summary()
  from public, anon, authenticated;
grant execute on function public.report_user_summary(), public.report_payments(), public.report_payment_summary()
  to service_role;
