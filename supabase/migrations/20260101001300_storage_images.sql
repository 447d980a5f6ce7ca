-- The `images` storage bucket: generated images live under <user_id>/..., served by public URL.
-- Only the owner can list, upload, replace or delete objects in their folder; nobody can list
-- another user's folder (a public bucket needs no SELECT policy to serve its public URLs).

insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values ('images', 'images', true, 5242880, array['image/png', 'image/jpeg', 'image/webp', 'image/gif'])
on conflict (id) do nothing;

create policy "Users can view their own images"
  on storage.objects for select to authenticated
  using (bucket_id = 'images' and (storage.foldername(name))[1] = (select auth.uid()::text));

create policy "Users can upload images to their own folder"
  on storage.objects for insert to authenticated
  with check (bucket_id = 'images' and (storage.foldername(name))[1] = (select auth.uid()::text));

create policy "Users can update their own images"
  on storage.objects for update to authenticated
  using (bucket_id = 'images' and (storage.foldername(name))[1] = (select auth.uid()::text))
  with check (bucket_id = 'images' and (storage.foldername(name))[1] = (select auth.uid()::text));

create policy "Users can delete their own images"
  on storage.objects for delete to authenticated
  using (bucket_id = 'images' and (storage.foldername(name))[1] = (select auth.uid()::text));
