-- Supabase-compatibility bootstrap for a plain PostgreSQL server (embedded or system).
--
-- A Supabase database ships roles, the `auth`, `storage` and `extensions` schemas and a few functions
-- that every migration in supabase/migrations relies on. This file recreates exactly those parts,
-- following the definitions in Supabase's own images, so that the migrations, RLS policies and pgTAP
-- files behave here as they do on Supabase. It is idempotent and must run as a superuser.
--
-- It never touches a real Supabase database: a database whose `auth` schema was not created by this
-- file (for example one with GoTrue's `auth.schema_migrations`) is refused with SQLSTATE 55000.

do $guard$
begin
  if exists (select 1 from pg_catalog.pg_namespace where nspname = 'auth')
     and coalesce(pg_catalog.obj_description(
           (select oid from pg_catalog.pg_namespace where nspname = 'auth'), 'pg_namespace'), '')
         not like 'idea-expansion supabase-compat%' then
    raise exception using
      errcode = '55000',
      message = 'refusing to bootstrap: this database already has a Supabase "auth" schema',
      hint = 'The compatibility bootstrap is only for plain PostgreSQL; a Supabase database already has everything it would create.';
  end if;
  if not (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
    raise exception using
      errcode = '42501',
      message = 'the Supabase-compatibility bootstrap must run as a superuser',
      hint = 'Connect as the server''s superuser (for example "postgres").';
  end if;
end
$guard$;

-- Roles ------------------------------------------------------------------------------------------
-- Cluster-wide: created once per server, shared by every database on it (as on Supabase).
do $roles$
declare
  r record;
begin
  for r in
    select * from (values
      ('anon',                   'nologin noinherit'),
      ('authenticated',          'nologin noinherit'),
      ('service_role',           'nologin noinherit bypassrls'),
      ('authenticator',          'login noinherit'),
      ('supabase_admin',         'nologin createrole createdb replication bypassrls'),
      ('supabase_auth_admin',    'nologin noinherit createrole'),
      ('supabase_storage_admin', 'nologin noinherit createrole')
    ) as t(name, options)
  loop
    if not exists (select 1 from pg_catalog.pg_roles where rolname = r.name) then
      execute pg_catalog.format('create role %I %s', r.name, r.options);
    end if;
  end loop;
end
$roles$;

-- PostgREST logs in as authenticator and switches to the request's role.
grant anon, authenticated, service_role to authenticator;
-- Storage's server switches to the request's role too.
grant anon, authenticated, service_role to supabase_storage_admin;
-- The owner roles may create objects in this database.
do $db$
begin
  execute pg_catalog.format('grant create on database %I to supabase_admin, supabase_auth_admin, supabase_storage_admin',
                            current_database());
end
$db$;

-- Schemas ----------------------------------------------------------------------------------------
create schema if not exists extensions;
grant usage on schema extensions to public, anon, authenticated, service_role;

create schema if not exists auth authorization supabase_admin;
comment on schema auth is 'idea-expansion supabase-compat: stands in for Supabase Auth (GoTrue)';
grant usage on schema auth to anon, authenticated, service_role, supabase_auth_admin;

create schema if not exists storage authorization supabase_admin;
comment on schema storage is 'idea-expansion supabase-compat: stands in for Supabase Storage';
grant usage on schema storage to anon, authenticated, service_role, supabase_storage_admin;

-- Supabase grants the API roles everything in public by default and lets RLS decide; migrations here
-- revoke what they do not want exposed, so the same migrations are correct on both.
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;

-- auth -------------------------------------------------------------------------------------------
create table if not exists auth.users (
  instance_id uuid,
  id uuid not null primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text unique default null,
  phone_confirmed_at timestamptz,
  banned_until timestamptz,
  deleted_at timestamptz,
  is_sso_user boolean not null default false,
  is_anonymous boolean not null default false
);
comment on table auth.users is 'Auth: Stores user login data within a secure schema.';
create index if not exists users_instance_id_idx on auth.users (instance_id);
alter table auth.users owner to supabase_auth_admin;
grant all on auth.users to supabase_auth_admin, service_role;

-- The claim readers, as Supabase defines them: the legacy per-claim settings first, then the JSON
-- document PostgREST sets for each request.
create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
comment on function auth.uid() is 'Deprecated. Use auth.jwt() -> ''sub'' instead.';

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;
comment on function auth.role() is 'Deprecated. Use auth.jwt() -> ''role'' instead.';

create or replace function auth.email() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;
comment on function auth.email() is 'Deprecated. Use auth.jwt() -> ''email'' instead.';

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

alter function auth.uid() owner to supabase_auth_admin;
alter function auth.role() owner to supabase_auth_admin;
alter function auth.email() owner to supabase_auth_admin;
alter function auth.jwt() owner to supabase_auth_admin;
grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
  to public, anon, authenticated, service_role;

-- storage ----------------------------------------------------------------------------------------
create table if not exists storage.buckets (
  id text not null primary key,
  name text not null,
  owner uuid,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  public boolean default false,
  avif_autodetection boolean default false,
  file_size_limit bigint,
  allowed_mime_types text[],
  owner_id text
);
create unique index if not exists bname on storage.buckets using btree (name);

create table if not exists storage.objects (
  id uuid not null default gen_random_uuid() primary key,
  bucket_id text references storage.buckets (id),
  name text,
  owner uuid,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  last_accessed_at timestamptz default now(),
  metadata jsonb,
  path_tokens text[] generated always as (string_to_array(name, '/')) stored,
  version text,
  owner_id text,
  user_metadata jsonb
);
create unique index if not exists bucketid_objname on storage.objects using btree (bucket_id, name);
create index if not exists name_prefix_search on storage.objects using btree (name text_pattern_ops);

alter table storage.buckets owner to supabase_storage_admin;
alter table storage.objects owner to supabase_storage_admin;
alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;
-- Migrations (run as postgres) create the policies on storage.objects and insert bucket rows.
grant all on storage.buckets, storage.objects to postgres with grant option;

create or replace function storage.foldername(name text) returns text[]
language plpgsql immutable
as $$
declare
  _parts text[];
begin
  select string_to_array(name, '/') into _parts;
  return _parts[1:array_length(_parts, 1) - 1];
end
$$;

create or replace function storage.filename(name text) returns text
language plpgsql immutable
as $$
declare
  _parts text[];
begin
  select string_to_array(name, '/') into _parts;
  return _parts[array_length(_parts, 1)];
end
$$;

create or replace function storage.extension(name text) returns text
language plpgsql immutable
as $$
declare
  _parts text[];
  _filename text;
begin
  select string_to_array(name, '/') into _parts;
  select _parts[array_length(_parts, 1)] into _filename;
  return reverse(split_part(reverse(_filename), '.', 1));
end
$$;

alter function storage.foldername(text) owner to supabase_storage_admin;
alter function storage.filename(text) owner to supabase_storage_admin;
alter function storage.extension(text) owner to supabase_storage_admin;
grant execute on function storage.foldername(text), storage.filename(text), storage.extension(text)
  to public, anon, authenticated, service_role;
