-- A blog post of a run that was never charged stays private, whoever asks.
--
-- finish_expansion keeps the post of a run that fell back to the offline templates private (the fallback rule of
-- 20260101002800_model_usage), but owners make their posts public through their column grant on is_public:
-- an owner could publish what they were never charged for, a user-visible side effect with no capture
-- behind it. This trigger refuses that for every role, owners and the service alike: a post becomes public
-- (inserted public, or is_public set to true) only when its run's credit was captured.

create function private.refuse_public_uncharged_post()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  -- An owner sees their own output and run (RLS); the service role sees every one.
  if new.is_public and (tg_op = 'INSERT' or not old.is_public) and exists (
    select 1
      from public.outputs o
      join public.executions e on e.id = o.execution_id
     where o.id = new.output_id and not e.charged
  ) then
    raise exception using
      errcode = 'PT409',
      message = 'this post comes from a run that was not charged (it fell back to the offline templates): '
                'it cannot be made public',
      hint = 'Expand the idea again with a model; that run is charged and its post can be published.';
  end if;
  return new;
end;
$$;

comment on function private.refuse_public_uncharged_post() is
  'Trigger: a blog post whose run was not charged (a fallback run) is never made public.';
revoke all on function private.refuse_public_uncharged_post() from public, anon, authenticated, service_role;

create trigger blog_posts_refuse_public_uncharged
  before insert or update of is_public on public.blog_posts
  for each row execute function private.refuse_public_uncharged_post();
