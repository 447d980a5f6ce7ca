-- Indexes that follow the SDK's listings, so that every list is an index scan in its own order (no Sort
-- node) over the rows of one user, whether that user comes from the RLS policy (`(select auth.uid()) =
-- user_id`, a value the planner cannot see) or from an explicit `user_id = ...` filter of the service role.
--
-- Under RLS the planner cannot tell a user with 90 ideas from one with 100,000, so an index that only
-- finds the user's rows (ideas' (user_id, status)) makes it read and sort all of them for "my 50
-- newest": 4,700 buffers for 100k ideas, against 4 with an index in the list's order (benchmarks/
-- rls_listings.py). Each index below is (user_id [, the filter the SDK offers], the list's order [, id,
-- the list's tie-breaker]); tests/test_list_plans.py proves every plan, custom and generic:
--
--   list                                            order                          index
--   ideas.list / page                               created_at desc, id desc       idx_ideas_user_created
--   ideas.list / page (order_by priority_score)     priority_score desc, id desc   idx_ideas_user_priority
--   ideas.list / page (status)                      either of the above            idx_ideas_user_status,
--                                                                                  idx_ideas_user_status_priority
--   ideas.list (service role, every user)           either of the above            idx_ideas_created, idx_ideas_priority
--   executions.list (status)                        started_at desc                idx_executions_user_status_started
--   executions.list                                 started_at desc                idx_executions_user_started (kept)
--   executions.list (service role, every user)      started_at desc                idx_executions_started
--   outputs.list (format)                           created_at desc                idx_outputs_user_format_created
--   outputs.list (execution_id)                     created_at desc                idx_outputs_execution
--   outputs.list                                    created_at desc                idx_outputs_user_created (kept)
--   outputs.list (service role, every user)         created_at desc                idx_outputs_created
--   blog_posts.list (user_id)                       created_at desc                idx_blog_posts_user_created
--   blog_posts.list (a user's own and public posts,
--     anon's public ones, every post for the
--     service role)                                 created_at desc                idx_blog_posts_created
--   blog_posts.list_public                          published_at desc              idx_blog_posts_public
--   credits.history, credits.charges                created_at desc                idx_payment_receipts_user_created,
--                                                                                  idx_credit_charges_user_created (kept)
--   credentials.list                                (none: at most 5 rows)         credentials_user_id_provider_key (kept)
--
-- Re-created under the same name (each old definition would be redundant beside the new one, so it goes):
--   * idx_ideas_user_status (user_id, status) gains created_at desc, id desc. It and
--     idx_ideas_user_status_priority still serve what it served: start_expansion's pick of the best
--     pending idea (user_id, status = 'pending', by priority_score desc) and the user_id foreign key;
--   * idx_outputs_execution (execution_id, user_id) gains created_at desc: the foreign key (execution_id,
--     user_id) stays covered, and a run's outputs come newest first without a sort;
--   * idx_blog_posts_public was partial (where is_public): it now starts with is_public instead. The SDK
--     sends `is_public = $1`, and a prepared statement's generic plan, made without the value, cannot
--     prove the partial index's predicate from it (only anon's policy, `is_public`, could): as a user or
--     the service role that plan read and sorted every post;
--   * idx_ideas_created and idx_ideas_priority gain id desc, the tie-breaker of the ideas listing
--     (priority_score has 101 values, so without it every page of the service role's listing of every
--     user's ideas sorted a whole tie group).
-- Kept because a function or the reports still need them: idx_executions_status (report_failed_expansions,
-- and the status filter of the service role's listing of every user's runs), idx_outputs_format.

-- ideas -----------------------------------------------------------------------------------------------------
create index idx_ideas_user_created on public.ideas (user_id, created_at desc, id desc);
create index idx_ideas_user_priority on public.ideas (user_id, priority_score desc, id desc);
drop index public.idx_ideas_user_status;
create index idx_ideas_user_status on public.ideas (user_id, status, created_at desc, id desc);
create index idx_ideas_user_status_priority on public.ideas (user_id, status, priority_score desc, id desc);

drop index public.idx_ideas_created;
create index idx_ideas_created on public.ideas (created_at desc, id desc);
drop index public.idx_ideas_priority;
create index idx_ideas_priority on public.ideas (priority_score desc, id desc);

-- executions --------------------------------------------------------------------------------------------------
create index idx_executions_user_status_started on public.executions (user_id, status, started_at desc);
create index idx_executions_started on public.executions (started_at desc);

-- outputs -------------------------------------------------------------------------------------------------------
create index idx_outputs_user_format_created on public.outputs (user_id, format, created_at desc);
create index idx_outputs_created on public.outputs (created_at desc);
drop index public.idx_outputs_execution;
create index idx_outputs_execution on public.outputs (execution_id, user_id, created_at desc);

-- blog_posts ----------------------------------------------------------------------------------------------------
create index idx_blog_posts_user_created on public.blog_posts (user_id, created_at desc);
create index idx_blog_posts_created on public.blog_posts (created_at desc);
drop index public.idx_blog_posts_public;
create index idx_blog_posts_public on public.blog_posts (is_public, published_at desc);
