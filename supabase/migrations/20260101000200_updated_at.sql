-- The shared BEFORE UPDATE trigger function that keeps updated_at columns current.

create function public.set_updated_at()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end;
$$;

comment on function public.set_updated_at() is
  'Trigger: sets updated_at to now() on every update of the row.';

-- Trigger functions fire without an EXECUTE check; nobody needs to call this directly.
revoke all on function public.set_updated_at() from public, anon, authenticated, service_role;
