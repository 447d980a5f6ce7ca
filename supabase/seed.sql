-- Seed: the admin user (admin@example.com) with 100 credits, 5 free + 95 paid.
-- Rerunnable: an existing admin is left exactly as it is.

do $seed$
declare
  v_admin uuid;
begin
  insert into public.users (email, name, timezone)
  values ('admin@example.com', 'Admin', 'UTC')
  on conflict (email) do nothing
  returning id into v_admin;

  -- Only a freshly created admin gets its credits; the users trigger already gave it 5 free.
  if v_admin is not null then
    update public.usage_tracking
       set free_expansions_remaining = 5,
           paid_credits_remaining = 95
     where user_id = v_admin;
  end if;
end
$seed$;
