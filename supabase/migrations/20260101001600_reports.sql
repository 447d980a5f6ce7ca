-- The database guide's "Common SQL queries" as functions, for the admin CLI's reports (service role).
-- The guide's user summary joined ideas and outputs side by side, multiplying the counts; these count
-- each on its own.

create function public.report_user_summary()
returns table (email text, ideas bigint, outputs bigint, free_remaining integer, paid_remaining integer,
               total_remaining integer, created_at timestamptz)
language sql stable security invoker set search_path = ''
as $$
  select u.email,
         (select count(*) from public.ideas i where i.user_id = u.id),
         (select count(*) from public.outputs o where o.user_id = u.id),
         t.free_expansions_remaining, t.paid_credits_remaining,
         coalesce(t.free_expansions_remaining + t.paid_credits_remaining, 0),
         u.created_at
    from public.users u
    left join public.usage_tracking t on t.user_id = u.id
   order by u.created_at desc;
$$;

create function public.report_top_users(p_limit integer default 10)
returns table (email text, output_count bigint, latest_output timestamptz)
language sql stable security invoker set search_path = ''
as $$
  select u.email, count(o.id), max(o.created_at)
    from public.users u join public.outputs o on o.user_id = u.id
   group by u.id, u.email
   order by count(o.id) desc, u.email
   limit p_limit;
$$;

create function public.report_failed_expansions()
returns table (email text, error_step text, failures bigint, latest timestamptz)
language sql stable security invoker set search_path = ''
as $$
  select u.email, e.error_step, count(*), max(e.completed_at)
    from public.executions e join public.users u on u.id = e.user_id
   where e.status = 'failed'
   group by u.email, e.error_step
   order by count(*) desc, u.email;
$$;

create function public.report_payments()
returns table (email text, amount_usd numeric, credits_purchased integer, bmc_reference text, status text,
               verified_at timestamptz, receipt_id uuid)
language sql stable security invoker set search_path = ''
as $$
  select u.email, r.amount_usd, r.credits_purchased, r.bmc_reference, r.status, r.verified_at, r.id
    from public.payment_receipts r join public.users u on u.id = r.user_id
   order by r.verified_at desc nulls last, r.created_at desc;
$$;

create function public.report_payment_summary()
returns table (email text, payments bigint, total_credits bigint, total_spent numeric)
language sql stable security invoker set search_path = ''
as $$
  select u.email, count(*), sum(r.credits_purchased), sum(r.amount_usd)
    from public.payment_receipts r join public.users u on u.id = r.user_id
   where r.status = 'verified'
   group by u.email
   order by sum(r.amount_usd) desc, u.email;
$$;

create function public.report_recent_executions(p_limit integer default 10)
returns table (email text, format_chosen text, status text, tokens_used integer, duration_seconds integer,
               error_step text, error_message text, started_at timestamptz, execution_id uuid)
language sql stable security invoker set search_path = ''
as $$
  select u.email, e.format_chosen, e.status, e.tokens_used, e.duration_seconds, e.error_step, e.error_message,
         e.started_at, e.id
    from public.executions e join public.users u on u.id = e.user_id
   order by e.started_at desc
   limit p_limit;
$$;

create function public.report_execution_summary()
returns table (email text, total_executions bigint, successful bigint, partial bigint, failed bigint,
               total_tokens bigint)
language sql stable security invoker set search_path = ''
as $$
  select u.email, count(*),
         count(*) filter (where e.status = 'completed'),
         count(*) filter (where e.status = 'partial'),
         count(*) filter (where e.status = 'failed'),
         coalesce(sum(e.tokens_used), 0)
    from public.executions e join public.users u on u.id = e.user_id
   group by u.email
   order by count(*) desc, u.email;
$$;

revoke all on function public.report_user_summary(), public.report_top_users(integer),
  public.report_failed_expansions(), public.report_payments(), public.report_payment_summary(),
  public.report_recent_executions(integer), public.report_execution_summary()
  from public, anon, authenticated;
grant execute on function public.report_user_summary(), public.report_top_users(integer),
  public.report_failed_expansions(), public.report_payments(), public.report_payment_summary(),
  public.report_recent_executions(integer), public.report_execution_summary()
  to service_role;
