-- The reports that return every row (users, failures, payments, payment and run totals) return pages.
--
-- Through the Supabase API a function's rows are cut at max_rows (1000 by default) without a word, so
-- "every payment receipt" silently stopped at the thousandth. Each of these reports now takes a page size
-- and the key of the last row it handed out, and returns the rows after it in one fixed order that ends
-- with a unique key (keyset paging, as the tables' listings do): the SDK asks page after page until one
-- comes back short, and a page never repeats or skips a row that did not change meanwhile. Called with
-- no arguments a report still returns all its rows in that order (psql, the SQL editor).
--
--   report                      order (the page key)                              after the row with
--   report_user_summary         created_at desc, email desc                       p_after_created_at, p_after_email
--   report_failed_expansions    failures desc, email, error_step nulls first      p_after_failures, p_after_email,
--                                                                                 p_after_error_step
--   report_payments             verified_at desc nulls last, receipt_id desc      p_after_verified_at, p_after_receipt_id
--   report_payment_summary      total_spent desc, email                           p_after_total_spent, p_after_email
--   report_execution_summary    total_executions desc, email                      p_after_total_executions, p_after_email
--
-- An aggregate's page key is its own total, so the group is computed again for each page: a group whose
-- total changes between two pages may move past the cursor (the same as a row whose sort value changes
-- in any keyset listing). Every e-mail here is unique per row: users.email is unique, and a deleted
-- payer is shown as '(deleted user <their anonymous id>)'. report_top_users and report_recent_executions
-- are "the first n" (n at most 1000) and stay as they are.

-- report_user_summary -------------------------------------------------------------------------------------------
drop function public.report_user_summary();
create function public.report_user_summary(
  p_limit integer default null,
  p_after_created_at timestamptz default null,
  p_after_email text default null
)
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
   where p_after_email is null or (u.created_at, u.email) < (p_after_created_at, p_after_email)
   order by u.created_at desc, u.email desc
   limit p_limit;
$$;

-- report_failed_expansions ---------------------------------------------------------------------------------------
-- error_step may be NULL: it sorts first within a user. Whether a cursor was given at all is told by
-- p_after_failures (a count, never NULL in a row), as the last row's error_step may itself be NULL.
drop function public.report_failed_expansions();
create function public.report_failed_expansions(
  p_limit integer default null,
  p_after_failures bigint default null,
  p_after_email text default null,
  p_after_error_step text default null
)
returns table (email text, error_step text, failures bigint, latest timestamptz)
language sql stable security invoker set search_path = ''
as $$
  select f.email, f.error_step, f.failures, f.latest
    from (select u.email, e.error_step, count(*) as failures, max(e.completed_at) as latest
            from public.executions e join public.users u on u.id = e.user_id
           where e.status = 'failed'
           group by u.email, e.error_step) f
   where p_after_failures is null
      or f.failures < p_after_failures
      or (f.failures = p_after_failures and f.email > p_after_email)
      or (f.failures = p_after_failures and f.email = p_after_email
          and case when p_after_error_step is null then f.error_step is not null
                   else f.error_step > p_after_error_step end)
   order by f.failures desc, f.email, f.error_step nulls first
   limit p_limit;
$$;

-- report_payments ---------------------------------------------------------------------------------------------
-- A receipt without verified_at (status pending) sorts last, as before; the receipt id breaks ties (it was
-- created_at, which the report does not return).
drop function public.report_payments();
create function public.report_payments(
  p_limit integer default null,
  p_after_verified_at timestamptz default null,
  p_after_receipt_id uuid default null
)
returns table (email text, amount_usd numeric, credits_purchased integer, bmc_reference text, status text,
               verified_at timestamptz, receipt_id uuid)
language sql stable security invoker set search_path = ''
as $$
  select coalesce(u.email, '(deleted user ' || r.user_id || ')'), r.amount_usd, r.credits_purchased,
         r.bmc_reference, r.status, r.verified_at, r.id
    from public.payment_receipts r left join public.users u on u.id = r.user_id
   where p_after_receipt_id is null
      or (p_after_verified_at is not null
          and (r.verified_at < p_after_verified_at or r.verified_at is null
               or (r.verified_at = p_after_verified_at and r.id < p_after_receipt_id)))
      or (p_after_verified_at is null and r.verified_at is null and r.id < p_after_receipt_id)
   order by r.verified_at desc nulls last, r.id desc
   limit p_limit;
$$;

-- report_payment_summary ----------------------------------------------------------------------------------------
drop function public.report_payment_summary();
create function public.report_payment_summary(
  p_limit integer default null,
  p_after_total_spent numeric default null,
  p_after_email text default null
)
returns table (email text, payments bigint, total_credits bigint, total_spent numeric)
language sql stable security invoker set search_path = ''
as $$
  select s.email, s.payments, s.total_credits, s.total_spent
    from (select coalesce(u.email, '(deleted user ' || r.user_id || ')') as email, count(*) as payments,
                 sum(r.credits_purchased::bigint) as total_credits, sum(r.amount_usd) as total_spent
            from public.payment_receipts r left join public.users u on u.id = r.user_id
           where r.status = 'verified'
           group by r.user_id, u.email) s
   where p_after_email is null
      or s.total_spent < p_after_total_spent
      or (s.total_spent = p_after_total_spent and s.email > p_after_email)
   order by s.total_spent desc, s.email
   limit p_limit;
$$;

-- report_execution_summary --------------------------------------------------------------------------------------
drop function public.report_execution_summary();
create function public.report_execution_summary(
  p_limit integer default null,
  p_after_total_executions bigint default null,
  p_after_email text default null
)
returns table (email text, total_executions bigint, successful bigint, partial bigint, failed bigint,
               total_tokens bigint)
language sql stable security invoker set search_path = ''
as $$
  select s.email, s.total_executions, s.successful, s.partial, s.failed, s.total_tokens
    from (select u.email, count(*) as total_executions,
                 count(*) filter (where e.status = 'completed') as successful,
                 count(*) filter (where e.status = 'partial') as partial,
                 count(*) filter (where e.status = 'failed') as failed,
                 coalesce(sum(e.tokens_used), 0) as total_tokens
            from public.executions e join public.users u on u.id = e.user_id
           group by u.email) s
   where p_after_email is null
      or s.total_executions < p_after_total_executions
      or (s.total_executions = p_after_total_executions and s.email > p_after_email)
   order by s.total_executions desc, s.email
   limit p_limit;
$$;

revoke all on function public.report_user_summary(integer, timestamptz, text),
  public.report_failed_expansions(integer, bigint, text, text),
  public.report_payments(integer, timestamptz, uuid),
  public.report_payment_summary(integer, numeric, text),
  public.report_execution_summary(integer, bigint, text)
  from public, anon, authenticated;
grant execute on function public.report_user_summary(integer, timestamptz, text),
  public.report_failed_expansions(integer, bigint, text, text),
  public.report_payments(integer, timestamptz, uuid),
  public.report_payment_summary(integer, numeric, text),
  public.report_execution_summary(integer, bigint, text)
  to service_role;
