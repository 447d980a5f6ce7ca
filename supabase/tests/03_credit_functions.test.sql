-- The three credit functions: the guide's lifecycle, refusals, idempotency and who may call them.
begin;
create extension if not exists pgtap with schema extensions;
-- The first migration revokes PUBLIC's default EXECUTE on new functions; pgTAP's must stay callable
-- while these tests act as anon, authenticated or service_role (rolled back with everything else).
grant execute on all functions in schema extensions to public;
set local search_path = extensions, public;
select plan(28);

insert into public.users (id, email) values
  ('00000000-0000-4000-8000-0000000000c1', 'tap-credits@example.test'),
  ('00000000-0000-4000-8000-0000000000c2', 'tap-credits-other@example.test');
delete from public.usage_tracking where user_id = '00000000-0000-4000-8000-0000000000c2';

select is(
  (select (free_expansions_remaining, paid_credits_remaining)::text from public.usage_tracking
    where user_id = '00000000-0000-4000-8000-0000000000c1'),
  '(5,0)',
  'a new user starts with 5 free credits'
);

set local role service_role;
select set_config('request.jwt.claims', '{"role":"service_role"}', true);

select ok(check_user_has_credits('00000000-0000-4000-8000-0000000000c1'), 'a new user has credits');
select is(check_user_has_credits('00000000-0000-4000-8000-0000000000c2'), false, 'no usage row: false, not null');
select is(consume_expansion_credit('00000000-0000-4000-8000-0000000000c1'), 'free', 'credit 1 is free');
select is(consume_expansion_credit('00000000-0000-4000-8000-0000000000c1'), 'free', 'credit 2 is free');
select is(consume_expansion_credit('00000000-0000-4000-8000-0000000000c1'), 'free', 'credit 3 is free');
select is(consume_expansion_credit('00000000-0000-4000-8000-0000000000c1'), 'free', 'credit 4 is free');
select is(consume_expansion_credit('00000000-0000-4000-8000-0000000000c1'), 'free', 'credit 5 is free');
select is(check_user_has_credits('00000000-0000-4000-8000-0000000000c1'), false, 'out of credits');
select throws_ok(
  $$select consume_expansion_credit('00000000-0000-4000-8000-0000000000c1')$$,
  'PT402', 'No credits remaining', 'consuming with no credits raises PT402'
);
select throws_ok(
  $$select consume_expansion_credit('00000000-0000-4000-8000-0000000000c2')$$,
  'PT404', 'No usage record for user', 'a user without a usage row is an error, not ''paid'''
);

select isnt(
  add_paid_credits('00000000-0000-4000-8000-0000000000c1', 5, 5.00, 'TAP-BMC-1', 'tap', null),
  null,
  'a grant returns its receipt id'
);
select is(
  add_paid_credits('00000000-0000-4000-8000-0000000000c1', 5, 5.00, 'TAP-BMC-1', 'tap', null),
  (select id from public.payment_receipts where bmc_reference = 'TAP-BMC-1'),
  'the same reference returns the first receipt'
);
select is(
  (select paid_credits_remaining from public.usage_tracking where user_id = '00000000-0000-4000-8000-0000000000c1'),
  5,
  'and grants only once'
);
select is(
  add_paid_credits('00000000-0000-4000-8000-0000000000c1', 5, 5.00, '  tap-bmc-1 ', 'tap', null),
  (select id from public.payment_receipts where bmc_reference = 'TAP-BMC-1'),
  'a reference is compared trimmed and ignoring case'
);
select throws_ok(
  $$select add_paid_credits('00000000-0000-4000-8000-0000000000c1', 5, 5.00, '   ', 'tap', null)$$,
  '22023', 'a payment reference is required (not blank)', 'a blank reference is refused'
);
select throws_ok(
  $$select add_paid_credits('00000000-0000-4000-8000-0000000000c1', 2147483647, 5.00, 'TAP-BMC-HUGE', 'tap', null)$$,
  '22023', null, 'a grant above 100000 credits is refused'
);
select throws_ok(
  $$select add_paid_credits('00000000-0000-4000-8000-0000000000c1', 6, 5.00, 'TAP-BMC-1', 'tap', null)$$,
  '23505', null, 'the same reference with other details is a conflict'
);
select throws_ok(
  $$select add_paid_credits('00000000-0000-4000-8000-0000000000c1', 0, 5.00, 'TAP-BMC-2', 'tap', null)$$,
  '22023', null, 'zero credits are rejected'
);
select throws_ok(
  $$select add_paid_credits('00000000-0000-4000-8000-0000000000c1', 5, 0, 'TAP-BMC-3', 'tap', null)$$,
  '22023', null, 'a zero amount is rejected'
);
select throws_ok(
  $$select add_paid_credits('00000000-0000-4000-8000-0000000000ff', 5, 5.00, 'TAP-BMC-4', 'tap', null)$$,
  'PT404', 'User not found', 'an unknown user is rejected'
);

select is(
  consume_expansion_credit('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-00000000e001'),
  'paid', 'after the grant credits are paid'
);
select is(
  consume_expansion_credit('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-00000000e001'),
  'paid', 'a replayed idempotency key returns the first answer'
);
select is(
  (select (paid_credits_remaining, total_expansions_used, total_free_used, total_paid_used)::text
     from public.usage_tracking where user_id = '00000000-0000-4000-8000-0000000000c1'),
  '(4,6,5,1)',
  'and charges once; counters add up'
);
insert into public.users (id, email) values ('00000000-0000-4000-8000-0000000000c3', 'tap-credits-third@example.test');
select is(
  consume_expansion_credit('00000000-0000-4000-8000-0000000000c3', '00000000-0000-4000-8000-00000000e001'),
  'free', 'keys are per user: another user''s key charges this user once, neither refused nor answered with theirs'
);
reset role;

set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-0000000000c1","role":"authenticated"}', true);
select is(check_user_has_credits('00000000-0000-4000-8000-0000000000c1'), true, 'a user may check their own credits');
select throws_ok(
  $$select check_user_has_credits('00000000-0000-4000-8000-0000000000c2')$$,
  '42501', null, 'but not another user''s'
);
select throws_ok(
  $$select consume_expansion_credit('00000000-0000-4000-8000-0000000000c1')$$,
  '42501', null, 'users cannot consume credits directly'
);
reset role;

select * from finish();
rollback;
