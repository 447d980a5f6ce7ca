-- A paying user's charge in one PL/pgSQL frame, and a balance row that stamps itself.
--
-- benchmarks/charge.py (pgbench, 2 cores) runs consume_expansion_credit beside one statement doing the same
-- work by hand: the guarded UPDATE of the balance and the ledger INSERT. Before this migration the function
-- ran at 0.85-0.93x of it. Three costs sat on top of the statement itself:
--   * a second frame: consume_expansion_credit called private.take_credit, each with its own search_path;
--   * the free-or-paid choice in every SET, guard and RETURNING of a statement the executor sets up afresh
--     on every call;
--   * the balance row's BEFORE UPDATE trigger (public.set_updated_at, a PL/pgSQL call of its own), which the
--     by-hand statement pays too: 4-8% of either (the benchmark's `stamped` lines).
-- What no function can shed is its own frame: any function a client calls is one PL/pgSQL call with
-- `set search_path` (the advisors require it of every function), and PostgreSQL 15 plans a SQL function
-- anew on every call. Against the by-hand statement that also stamps updated_at, that frame is what is left.
--
--   * usage_tracking_set_updated_at fires only when the row is not already stamped with now(): a writer
--     that sets updated_at = now() itself is not sent through a PL/pgSQL call for it, and any other writer
--     (a grant, a release, an admin's UPDATE by hand, a writer setting some other time) still gets now().
--     The rule is unchanged: after every update, updated_at is the writing transaction's now().
--   * public.consume_expansion_credit takes a paying user's credit (no free credit left, a paid one left)
--     with the ledgered statement itself, in its own frame, stamping the row: no other function is called
--     but the ledger id's default. Everyone else (free credits left, no credit at all, no usage row, a null
--     user) goes on to private.take_credit as before, which still holds the only copy of the free-first rule,
--     PT402 and PT404; its statement stamps the row too. A paid credit is only taken here when no free one is
--     left, so the order is still free first, then paid, whatever happens concurrently: the guard is
--     re-checked on the newest version of the row, as in take_credit.
--   * With a key, that statement (with the key) and, when it takes nothing, take_credit run in one
--     BEGIN ... EXCEPTION block (before, the block held take_credit alone): a key already charged (by an
--     earlier call, or by a concurrent one that held the balance first) is refused by the ledger's unique
--     (user_id, idempotency_key), which undoes the attempt, balance and ledger row alike, and is answered
--     under the balance lock exactly as before: the first answer, or 55000 while held or once released.
--     INSERT ... ON CONFLICT DO NOTHING instead, with the credit given back by hand, measured the same within
--     the noise (0.96x and 0.95x of the by-hand statement at -c 1 and -c 32, against 0.95x and 0.96x) and
--     needs the charge written a second time, in reverse.

-- The balance row stamps itself --------------------------------------------------------------------------------
drop trigger usage_tracking_set_updated_at on public.usage_tracking;
create trigger usage_tracking_set_updated_at
  before update on public.usage_tracking
  for each row
  when (new.updated_at is distinct from pg_catalog.now())
  execute function public.set_updated_at();

-- private.take_credit: unchanged but for the stamp --------------------------------------------------------------
create or replace function private.take_credit(p_user_id uuid, p_key uuid, p_capture boolean)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_usage public.usage_tracking%rowtype;
  v_type text;
  v_floor integer := 1;   -- free credits a row must have more than for the fast pass to take one
  v_before integer;       -- under the lock: the free credits the locked row had
begin
  loop
    -- The guard and the SET expressions are evaluated on the row the UPDATE locks (PostgreSQL re-checks
    -- them on the newest version when a concurrent charge, grant or release got there first), so the
    -- choice is made on the balance as it is, with no lock taken beforehand.
    with taken as (
      update public.usage_tracking u
         set free_expansions_remaining = u.free_expansions_remaining - (u.free_expansions_remaining > 0)::integer,
             paid_credits_remaining = u.paid_credits_remaining - (u.free_expansions_remaining = 0)::integer,
             total_expansions_used = u.total_expansions_used + p_capture::integer,
             total_free_used = u.total_free_used + (p_capture and u.free_expansions_remaining > 0)::integer,
             total_paid_used = u.total_paid_used + (p_capture and u.free_expansions_remaining = 0)::integer,
             updated_at = pg_catalog.now()
       where u.user_id = p_user_id
         and (u.free_expansions_remaining > v_floor
              or (u.free_expansions_remaining = 0 and u.paid_credits_remaining > 0))
      returning u.user_id,
                coalesce(u.free_expansions_remaining < v_before, u.free_expansions_remaining > 0) as free
    )
    insert into public.credit_charges (user_id, idempotency_key, credit_type, status)
    select t.user_id, p_key, case when t.free then 'free' else 'paid' end,
           case when p_capture then 'captured' else 'held' end
      from taken t
    returning credit_type into v_type;
    exit when found;

    -- Nothing taken: no usage row (22004 / PT404 from lock_usage), no credit left, the last free credit, or
    -- a balance that changed since the statement began. Under the lock the balance cannot change, so the
    -- second pass takes the credit: the loop runs at most twice.
    assert v_before is null, 'take_credit took nothing under the balance lock';
    v_usage := private.lock_usage(p_user_id);
    if p_key is not null and exists (select 1 from public.credit_charges c
                                      where c.user_id = p_user_id and c.idempotency_key = p_key) then
      return null;
    end if;
    if v_usage.free_expansions_remaining <= 0 and v_usage.paid_credits_remaining <= 0 then
      raise exception using
        errcode = 'PT402',
        message = 'No credits remaining',
        detail = pg_catalog.format('user_id %s has 0 free and 0 paid credits (runs in flight hold theirs)', p_user_id),
        hint = 'Purchase more credits; an admin grants them with add_paid_credits.';
    end if;
    v_floor := 0;
    v_before := v_usage.free_expansions_remaining;
  end loop;
  return v_type;
end;
$$;

-- public.consume_expansion_credit -------------------------------------------------------------------------------
create or replace function public.consume_expansion_credit(p_user_id uuid, p_idempotency_key uuid default null)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_charge public.credit_charges%rowtype;
  v_type text;
  v_constraint text;
begin
  if p_idempotency_key is null then
    -- A paying user: the ledgered statement itself. The ledger row's status defaults to captured.
    with charged as (
      update public.usage_tracking u
         set paid_credits_remaining = u.paid_credits_remaining - 1,
             total_expansions_used = u.total_expansions_used + 1,
             total_paid_used = u.total_paid_used + 1,
             updated_at = pg_catalog.now()
       where u.user_id = p_user_id and u.free_expansions_remaining = 0 and u.paid_credits_remaining > 0
      returning u.user_id
    )
    insert into public.credit_charges (user_id, credit_type)
    select c.user_id, 'paid' from charged c
    returning credit_type into v_type;
    if found then
      return v_type;
    end if;
    -- Free credits left, none at all, no usage row or no user: the free-first rule and its errors.
    return private.take_credit(p_user_id, null, true);
  end if;

  -- Keys are per user: another user's key is neither an error nor a reveal, just a new key here.
  begin
    -- The statement above, with the key, in the block that turns a known key's unique violation into its
    -- first answer: leaving the block undoes the attempt, balance and ledger row alike.
    with charged as (
      update public.usage_tracking u
         set paid_credits_remaining = u.paid_credits_remaining - 1,
             total_expansions_used = u.total_expansions_used + 1,
             total_paid_used = u.total_paid_used + 1,
             updated_at = pg_catalog.now()
       where u.user_id = p_user_id and u.free_expansions_remaining = 0 and u.paid_credits_remaining > 0
      returning u.user_id
    )
    insert into public.credit_charges (user_id, idempotency_key, credit_type)
    select c.user_id, p_idempotency_key, 'paid' from charged c
    returning credit_type into v_type;
    if not found then
      v_type := private.take_credit(p_user_id, p_idempotency_key, true);
    end if;
    if v_type is not null then
      return v_type;
    end if;
  exception when unique_violation then
    -- The key was charged already, by an earlier call or by a concurrent one that held the balance lock
    -- first. The first charge stands; answer for it below.
    get stacked diagnostics v_constraint = constraint_name;
    if v_constraint is distinct from 'credit_charges_user_id_idempotency_key_key' then
      raise;
    end if;
  end;

  -- Answer for the key under the balance lock.
  perform private.lock_usage(p_user_id);
  select * into v_charge from public.credit_charges c
   where c.user_id = p_user_id and c.idempotency_key = p_idempotency_key;
  if not found then
    return private.take_credit(p_user_id, p_idempotency_key, true);
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
end;
$$;

comment on function public.consume_expansion_credit(uuid, uuid) is
  'Takes one credit (free first, then paid) and returns ''free'' or ''paid''; PT402 when none is left. '
  'With p_idempotency_key, a repeat returns the first answer and charges nothing.';
