-- credentials.validation_status is the service's verdict on a stored secret (checked against its
-- provider), never the user's: a trigger refuses a user's 'valid' or 'invalid', and a new secret
-- written by a user starts over as 'not_checked'. Users keep their column grants, because the SDK's
-- upsert (PostgREST assigns every column it sends) writes 'not_checked' with each new secret.

create function public.enforce_credential_validation_status()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  -- The API's user roles; the service role (and administrators) record the verdict.
  if current_user not in ('authenticated', 'anon') then
    return new;
  end if;
  if (tg_op = 'INSERT' and new.validation_status is distinct from 'not_checked')
     or (tg_op = 'UPDATE' and new.validation_status is distinct from old.validation_status
         and new.validation_status is distinct from 'not_checked') then
    raise exception using
      errcode = '42501',
      message = 'validation_status is set by the service after checking the credential',
      detail = pg_catalog.format('credential for %s', new.provider),
      hint = 'Store the secret without validation_status (or with not_checked); the service records whether it is valid.';
  end if;
  -- A verdict is about one secret for one provider: a user who replaces the secret, or relabels it as
  -- another provider's, gets "not checked", not the old verdict.
  if tg_op = 'UPDATE' and (new.encrypted_value is distinct from old.encrypted_value
                           or new.provider is distinct from old.provider) then
    new.validation_status := 'not_checked';
  end if;
  return new;
end;
$$;

comment on function public.enforce_credential_validation_status() is
  'Trigger: only the service sets credentials.validation_status; a user''s new secret is not_checked.';
revoke all on function public.enforce_credential_validation_status() from public, anon, authenticated, service_role;

create trigger credentials_guard_validation_status
  before insert or update on public.credentials
  for each row execute function public.enforce_credential_validation_status();
