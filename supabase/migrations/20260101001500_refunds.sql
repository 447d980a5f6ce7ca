-- refund_payment: an admin refunds a payment. The receipt is marked refunded and the paid credits it
-- granted are taken back, as far as they are still unused (never below zero); the caller is told how
-- many were removed so a partial take-back can be explained.

create function public.refund_payment(p_receipt_id uuid, p_note text default null)
returns table (
  receipt_id uuid,
  user_id uuid,
  credits_purchased integer,
  credits_removed integer,
  paid_credits_remaining integer
)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_receipt public.payment_receipts%rowtype;
  v_paid integer;
  v_removed integer := 0;
begin
  select * into v_receipt from public.payment_receipts r where r.id = p_receipt_id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'Receipt not found',
      detail = pg_catalog.format('no payment receipt %s', p_receipt_id);
  end if;
  if v_receipt.status = 'refunded' then
    raise exception using errcode = '55000',
      message = pg_catalog.format('receipt %s is already refunded', p_receipt_id);
  end if;

  select u.paid_credits_remaining into v_paid
    from public.usage_tracking u where u.user_id = v_receipt.user_id for update;
  -- A paid credit held by a run in flight is in neither the balance nor spent yet: if that run failed
  -- after the refund, its release would hand the refunded credit back. Refund once runs have settled.
  if exists (select 1 from public.credit_charges c
              where c.user_id = v_receipt.user_id and c.status = 'held' and c.credit_type = 'paid') then
    raise exception using
      errcode = '55000',
      message = 'the user has runs in flight holding paid credits',
      hint = 'Refund once they have finished (or been reaped).';
  end if;
  -- A pending receipt never granted anything; a verified one takes back what is left of its credits.
  if v_receipt.status = 'verified' and v_paid is not null then
    v_removed := least(v_paid, v_receipt.credits_purchased);
    update public.usage_tracking u
       set paid_credits_remaining = u.paid_credits_remaining - v_removed
     where u.user_id = v_receipt.user_id
    returning u.paid_credits_remaining into v_paid;
  end if;

  update public.payment_receipts r
     set status = 'refunded',
         notes = left(concat_ws(E'\n', r.notes, pg_catalog.format('refunded %s: %s of %s credits removed%s',
                      pg_catalog.now()::date, v_removed, v_receipt.credits_purchased,
                      case when p_note is not null then ' (' || p_note || ')' else '' end)), 2000)
   where r.id = p_receipt_id;

  return query select v_receipt.id, v_receipt.user_id, v_receipt.credits_purchased, v_removed, coalesce(v_paid, 0);
end;
$$;

comment on function public.refund_payment(uuid, text) is
  'Marks a receipt refunded and removes the still-unused paid credits it granted (never below zero).';
revoke all on function public.refund_payment(uuid, text) from public, anon, authenticated;
grant execute on function public.refund_payment(uuid, text) to service_role;
