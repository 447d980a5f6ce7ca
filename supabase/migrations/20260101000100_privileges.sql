-- Privileges first: no function is executable by PUBLIC, anon or authenticated unless a later
-- migration grants it explicitly, right after creating it.

-- Global default (the only place PUBLIC's implicit EXECUTE can be removed).
alter default privileges revoke execute on functions from public;
-- Supabase's own default grants in public, for the roles PostgREST switches to.
alter default privileges in schema public revoke execute on functions from anon, authenticated;
