-- Every table has RLS enabled, and exactly the policies the migrations promise.
begin;
create extension if not exists pgtap with schema extensions;
-- The first migration revokes PUBLIC's default EXECUTE on new functions; pgTAP's must stay callable
-- while these tests act as anon, authenticated or service_role (rolled back with everything else).
grant execute on all functions in schema extensions to public;
set local search_path = extensions, public;
select plan(21);

select tables_are(
  'public',
  array['users', 'ideas', 'credentials', 'executions', 'outputs', 'blog_posts',
        'usage_tracking', 'payment_receipts', 'credit_charges'],
  'public has exactly the application tables'
);

select is(
  (select array_agg(c.relname::text order by c.relname) from pg_class c
    where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and not c.relrowsecurity),
  null,
  'row-level security is enabled on every public table'
);
select is(
  (select relrowsecurity from pg_class where oid = 'storage.objects'::regclass),
  true,
  'row-level security is enabled on storage.objects'
);

select policies_are('public', 'users',
  array['Users can view their own profile', 'Users can update their own profile']);
select policies_are('public', 'ideas',
  array['Users can view their own ideas', 'Users can create their own ideas',
        'Users can update their own ideas', 'Users can delete their own ideas']);
select policies_are('public', 'credentials',
  array['Users can view their own credentials', 'Users can create their own credentials',
        'Users can update their own credentials', 'Users can delete their own credentials']);
select policies_are('public', 'executions', array['Users can view their own executions']);
select policies_are('public', 'outputs', array['Users can view their own outputs']);
select policies_are('public', 'blog_posts',
  array['Anyone can view public blog posts', 'Users can view their own and public blog posts',
        'Users can update their own blog posts',
        'Users can delete their own blog posts']);
select policies_are('public', 'usage_tracking', array['Users can view their own usage']);
select policies_are('public', 'payment_receipts', array['Users can view their own payment receipts']);
select policies_are('public', 'credit_charges', array['Users can view their own credit charges']);
select policies_are('storage', 'objects',
  array['Users can view their own images', 'Users can upload images to their own folder',
        'Users can update their own images', 'Users can delete their own images']);

select policy_roles_are('public', 'blog_posts', 'Anyone can view public blog posts', array['anon'],
  'public blog posts are readable by anon');
select policy_cmd_is('public', 'usage_tracking', 'Users can view their own usage', 'select',
  'users can only read their usage');

select is(
  (select count(*)::int from pg_policies where schemaname in ('public', 'storage') and cmd = 'ALL'),
  0,
  'no FOR ALL policies'
);
select is(
  (select count(*)::int from pg_policies
    where schemaname in ('public', 'storage')
      and not (roles = array['authenticated']::name[] or roles = array['anon']::name[])),
  0,
  'every policy is written for authenticated or anon'
);
select is(
  (select count(*)::int from pg_policies
    where schemaname in ('public', 'storage')
      and (coalesce(qual, '') ~ '(?<!SELECT )(?<!SELECT \()auth\.uid\(\)'
           or coalesce(with_check, '') ~ '(?<!SELECT )(?<!SELECT \()auth\.uid\(\)')),
  0,
  'auth.uid() is always wrapped in a sub-select'
);

-- As the owner and as a stranger (PostgREST-style: role + claims for this transaction only).
insert into public.users (id, email) values
  ('00000000-0000-4000-8000-00000000000a', 'tap-owner@example.test'),
  ('00000000-0000-4000-8000-00000000000b', 'tap-other@example.test');
insert into public.ideas (user_id, title) values ('00000000-0000-4000-8000-00000000000a', 'tap idea');

set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-00000000000a","role":"authenticated"}', true);
select is((select count(*)::int from public.ideas), 1, 'the owner sees their idea');
select set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-00000000000b","role":"authenticated"}', true);
select is((select count(*)::int from public.ideas), 0, 'another user sees nothing');
reset role;

set local role anon;
select set_config('request.jwt.claims', '{"role":"anon"}', true);
select throws_ok('select count(*) from public.ideas', '42501', null, 'anon cannot read ideas');
reset role;

select * from finish();
rollback;
