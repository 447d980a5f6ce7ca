-- The credit charge at its limit, and time-ordered ledger ids.
--
--   * private.uuidv7(): a version 7 UUID (RFC 9562: 48-bit unix milliseconds, version and variant bits, 74
--     random bits), one definition for PostgreSQL 15 (Supabase) and 18 (which has uuidv7() built in). It is
--     the default of public.credit_charges.id: ledger rows are appended in id order, so the primary key
--     grows at its right edge instead of touching (and, after each checkpoint, writing a full image of) a
--     random leaf page per charge. Ids made before stay as they are; both kinds are valid uuids.
--     executions and outputs keep random ids: a run's id is made by start_expansion (not by the column
--     default) and is its credit's idempotency key, an output is one row per run of several kilobytes, and
--     both are updated in place as the run moves on, so neither is the append-only stream the ledger is.
--   * private.take_credit: the charge is one statement, with no SELECT ... FOR UPDATE first and no read of
--     the balance before it: a guarded UPDATE takes the credit (free first, then paid) and its RETURNING
--     feeds the ledger INSERT. Only when it takes nothing is the row locked and "why not" asked: PT404 (no
--     usage row) or PT402 (no credit), still the only copy of that rule.
--   * public.consume_expansion_credit: without a key it is that one statement. With a key it charges at once
--     too (no look-up first); a key already charged is refused by the ledger's unique (user_id,
--     idempotency_key), which undoes the attempt, and is then answered under the balance lock exactly as
--     before: the first answer, or 55000 while held or once released. Concurrent calls with one key charge
--     once and all get the first answer.
--
-- The ledger has had no foreign key to public.users since the money_records migration (its rows outlive
-- the user, anonymised), so a charge pays no foreign-key check; a charge for an unknown user is still
-- refused (PT404), because there is no usage_tracking row to take the credit from.

-- private.uuidv7 ------------------------------------------------------------------------------------------------
-- PL/pgSQL, not SQL: every function here sets search_path, which stops a SQL function from being inlined,
-- and on PostgreSQL 15 a SQL function that is not inlined is planned anew in every statement that calls it
-- (about 0.15 ms per single-row insert); PL/pgSQL keeps its plan. gen_random_uuid() supplies the random bits
-- and the variant; the first 48 bits become the time, and bits 52-53 turn version 4 into version 7.
create function private.uuidv7()
returns uuid
language plpgsql
volatile
parallel safe
security invoker
set search_path = ''
as $$
begin
  return pg_catalog.encode(
    pg_catalog.set_bit(
      pg_catalog.set_bit(
        pg_catalog.overlay(
          pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
          pg_catalog.substr(
            pg_catalog.int8send(pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::bigint),
            3),
          1, 6),
        52, 1),
      53, 1),
    'hex')::uuid;
end;
$$;

comment on function private.uuidv7() is
  'A version 7 UUID (RFC 9562): unix milliseconds first, then 74 random bits; ids made later sort later.';
revoke all on function private.uuidv7() from public, anon, authenticated;
-- Whoever inserts a ledger row evaluates the default: only the service role's functions do.
grant execute on function private.uuidv7() to service_role;

alter table public.credit_charges alter column id set default private.uuidv7();

comment on column public.credit_charges.id is
  'Time-ordered (UUID version 7) since the charge_at_limit migration, so the ledger grows at the end of its '
  'primary key; older rows keep their random (version 4) ids.';

-- private.take_credit -------------------------------------------------------------------------------------------
-- Which kind of credit was taken is read back from the updated row, since RETURNING sees only new values
-- (PostgreSQL 15 has no RETURNING OLD): a free credit was taken exactly when free credits are left after it,
-- as long as the fast pass never takes the last free one (its guard skips a row with exactly 1). The pass
-- under the lock knows the balance it locked, so it compares with that instead.
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
             total_paid_used = u.total_paid_used + (p_capture and u.free_expansions_remaining = 0)::integer
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

comment on function private.take_credit(uuid, uuid, boolean) is
  'Takes one credit (free first, then paid; PT402 when none, PT404 without a usage row) and writes its ledger row '
  'in one statement: captured at once, or held for a run. A key the user already has a charge under takes '
  'nothing: null when found under the lock, else the ledger''s unique violation (23505).';

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
  -- A null user is refused by take_credit (22004), a user without a usage row too (PT404).
  if p_idempotency_key is null then
    return private.take_credit(p_user_id, null, true);
  end if;

  -- Keys are per user: another user's key is neither an error nor a reveal, just a new key here.
  begin
    v_type := private.take_credit(p_user_id, p_idempotency_key, true);
    if v_type is not null then
      return v_type;
    end if;
  exception when unique_violation then
    -- The key was charged already, by an earlier call or by a concurrent one that held the balance lock
    -- first: leaving this block undid our attempt. The first charge stands; answer for it below.
    get stacked diagnostics v_constraint = constraint_name;
    if v_constraint is distinct from 'credit_charges_user_id_idempotency_key_key' then
      raise;
    end if;
  end;

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
