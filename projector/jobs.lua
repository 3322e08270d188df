-- The projection's server-side functions: the merge of a job's delta (the fold of
-- projector/fold.py, over stored values), the digests `replay verify` compares, and the
-- guarded replace of `replay job`.
--
-- `projector/store.py` loads this as a Redis Function library and declares, before it:
-- UNIT and GROUP_SEPARATOR, the stored format's separators, NO_ARTIFACTS, the manifest a
-- public value never shares (contracts/job_state.py), and SUFFIX, a digest of this code that
-- every function name carries, so that two releases of the projector (a rolling upgrade) keep
-- their own functions side by side.
--
-- A group value starts with its tag: seq UNIT event_id UNIT ...; a job is a hash of the
-- groups h (head: ... status UNIT manifest), o (origin) and p (public: ... lead UNIT artifacts
-- UNIT tail, its event being lead .. artifacts .. tail). An empty artifacts part means "the
-- head's manifest": written exactly when the head is the same event's and its manifest is
-- those artifacts, not NO_ARTIFACTS (contracts.job_state.shares_artifacts).

-- Bound at the first call: loading a library sees only the `redis` API.
local match, find, byte, sub, min, to_number, call, sha1

local function bind()
  match, find, byte, sub = string.match, string.find, string.byte, string.sub
  min, to_number = math.min, tonumber
  call, sha1 = redis.call, redis.sha1hex
end

local SEQ = '^%d+'
local ID = '^%d+' .. UNIT .. '([^' .. UNIT .. ']*)'
local PART = '[^' .. UNIT .. ']*'
local TAG = '^' .. PART .. UNIT .. PART .. UNIT
-- A public value's tag and lead with the separator after them, its artifacts, and the
-- separator before its tail with the tail. No match: the earlier layout, the event whole.
local PUBLIC_PARTS = '^(' .. PART .. UNIT .. PART .. UNIT .. PART .. UNIT .. ')(' .. PART
  .. ')(' .. UNIT .. PART .. ')$'
local MANIFEST = TAG .. PART .. UNIT .. '(.*)$'
-- Two separators meet in a value only around an empty artifacts part.
local SHARED = UNIT .. UNIT

local function seq_of(value) return to_number(match(value, SEQ)) end
local function id_of(value) return match(value, ID) end

-- Byte by byte, not with Lua's `<` on strings, which follows the server's locale.
local function greater(a, b)
  if a == b then return false end
  for i = 1, min(#a, #b) do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

-- The fold's ranks (projector/fold.py head_rank, origin_rank): the head goes to the greatest
-- (seq, event_id), the origin to the least seq and, among equal seqs, the greatest event_id;
-- between twins (the same seq and event_id, different content), to the greater value. Seqs
-- are at most 2^53-1, exact as Lua numbers. Whether the new value (whose seq is `seq`) beats
-- the stored one. (The public group: `public_beats`.)
local function beats(new, seq, stored, least_seq_wins)
  if not stored then return true end
  local stored_seq = seq_of(stored)
  if seq ~= stored_seq then
    if least_seq_wins then return seq < stored_seq end
    return seq > stored_seq
  end
  local new_id, stored_id = id_of(new), id_of(stored)
  if new_id ~= stored_id then return greater(new_id, stored_id) end
  return greater(new, stored)
end

-- The artifacts a public value leaves to the head: the manifest of `head` when it is the same
-- event's (the same tag), else NO_ARTIFACTS, as the codec reads them (a merge never leaves a
-- public value sharing with another event's head).
local function shared_manifest(public, head)
  if head then
    local tag = match(public, TAG)
    if sub(head, 1, #tag) == tag then return match(head, MANIFEST) end
  end
  return NO_ARTIFACTS
end

-- A public value (written under `head`) as the fold ranks it: the tag and the event whole.
local function whole(public, head)
  local front, artifacts, back = match(public, PUBLIC_PARTS)
  if not front then return public end
  if artifacts == '' then artifacts = shared_manifest(public, head) end
  return sub(front, 1, -2) .. artifacts .. sub(back, 2)
end

-- The public group's rank (the fold's head_rank): the greatest (seq, event_id), then between
-- twins the greater event, compared whole. Whether `new` (written under the head `new_head`)
-- beats `stored` (under `stored_head`).
local function public_beats(new, new_head, stored, stored_head)
  if not stored then return true end
  local seq, stored_seq = seq_of(new), seq_of(stored)
  if seq ~= stored_seq then return seq > stored_seq end
  local new_id, stored_id = id_of(new), id_of(stored)
  if new_id ~= stored_id then return greater(new_id, stored_id) end
  return greater(whole(new, new_head), whole(stored, stored_head))
end

-- The public value `public`, written under the head `own_head`, as it is written under the
-- head `head` (the codec's public_value): its artifacts given back when it shared them with
-- a head that is replaced, left to `head` when it is the same event's with those artifacts
-- as its manifest. Most calls return at the first or second line: the same head, or a value
-- that shares nothing with a head of another seq.
local function under(public, own_head, head)
  if not public or own_head == head then return public end
  if not find(public, SHARED, 1, true) and not (head and seq_of(public) == seq_of(head)) then
    return public
  end
  local front, artifacts, back = match(public, PUBLIC_PARTS)
  if not front then return public end
  if artifacts == '' then artifacts = shared_manifest(public, own_head) end
  if artifacts ~= NO_ARTIFACTS and artifacts == shared_manifest(public, head) then
    artifacts = ''
  end
  return front .. artifacts .. back
end

-- A job's groups joined into one string, '' for an absent group: what a merge announces and
-- what the digests hash (`contracts.job_state.split_groups` reads it).
local function joined(values)
  return (values[1] or '') .. GROUP_SEPARATOR .. (values[2] or '') .. GROUP_SEPARATOR
    .. (values[3] or '')
end

-- Merges one job's delta (its head, origin and public group values, '' for an absent group;
-- its public value written under its head) into its hash. Returns the number of groups written
-- and whether the head was.
-- Every change is announced on the job's channel (its key) with the job's groups as they now
-- are (`joined`): the api's near cache takes the new state from the announcement and its
-- waiting readers answer without reading the job again.
-- Redis runs this for every job of every batch, on the core the projector does not use: it
-- reads each stored group once, makes no strings it can avoid (the channel is the key itself)
-- and takes an event id out of a value only when the seqs are equal.
local function merge_one(key, head, origin, public)
  local stored = call('HMGET', key, 'h', 'o', 'p')
  local stored_head, stored_public = stored[1], stored[3]
  local set, n, head_written = {}, 0, false
  local new_head, kept, kept_under = stored_head, stored_public, stored_head
  if head ~= '' and beats(head, seq_of(head), stored_head, false) then
    set[n + 1] = 'h'; set[n + 2] = head; n = n + 2
    new_head, head_written = head, true
  end
  if origin ~= '' and beats(origin, seq_of(origin), stored[2], true) then
    set[n + 1] = 'o'; set[n + 2] = origin; n = n + 2
    stored[2] = origin
  end
  if public ~= '' and public_beats(public, head, stored_public, stored_head) then
    kept, kept_under = public, head
  end
  kept = under(kept, kept_under, new_head)
  if kept ~= stored_public then
    set[n + 1] = 'p'; set[n + 2] = kept; n = n + 2
  end
  if n > 0 then
    stored[1], stored[3] = new_head, kept
    call('HSET', key, unpack(set))
    call('SPUBLISH', key, joined(stored))
  end
  return n / 2, head_written
end

-- KEYS: job hashes. ARGV: three values per job, in the order of KEYS (`merge_one`).
-- Returns the number of groups written per job.
local function job_merge(keys, args)
  if not call then bind() end
  local written = {}
  for i = 1, #keys do
    local last = 3 * i
    written[i] = merge_one(keys[i], args[last - 2], args[last - 1], args[last])
  end
  return written
end

-- `job_merge` with a fourth value per job, for JOB_RETENTION_SECONDS: the unix time its key
-- expires at when the delta's head is a final status (SUCCEEDED, FAILED), '' otherwise. A
-- head that wins sets the expiry (a time already past deletes the job: a rebuild follows the
-- same rule as the live projector) or, when it is not final, clears it (the job runs again).
local function job_merge_expiring(keys, args)
  if not call then bind() end
  local written = {}
  for i = 1, #keys do
    local key, last = keys[i], 4 * i
    local groups, head_written = merge_one(key, args[last - 3], args[last - 2], args[last - 1])
    if head_written then
      if args[last] ~= '' then
        call('EXPIREAT', key, args[last])
      else
        call('PERSIST', key)
      end
    end
    written[i] = groups
  end
  return written
end

-- KEYS: job hashes. Returns per key the SHA1 of its groups joined, or false when it does not
-- exist.
local function job_digests(keys)
  if not call then bind() end
  local digests = {}
  for i = 1, #keys do
    if call('EXISTS', keys[i]) == 0 then
      digests[i] = false
    else
      digests[i] = sha1(joined(call('HMGET', keys[i], 'h', 'o', 'p')))
    end
  end
  return digests
end

-- KEYS[1]: a job hash. ARGV: its h, o, p values as the caller read them ('' for absent), the
-- new h, o, p values joined (what is announced), the unix time the key expires at ('' for
-- never), then the new fields and values. Replaces the hash only while it still holds what was
-- read (a live merge in between makes it return 0).
local function job_replace_if_unchanged(keys, args)
  if not call then bind() end
  local key = keys[1]
  if joined(call('HMGET', key, 'h', 'o', 'p')) ~= joined(args) then return 0 end
  call('DEL', key)
  call('HSET', key, unpack(args, 6))
  if args[5] ~= '' then call('EXPIREAT', key, args[5]) end
  call('SPUBLISH', key, args[4])
  return 1
end

-- KEYS[1]: the active version's key, KEYS[2]: the previous version's key (one slot).
-- ARGV[1]: the version to make active; ARGV[2]: the version the active key means when absent.
-- Switches both at once and returns the version it replaced: a reader never sees the active
-- version changed and the previous one not yet remembered.
local function job_switch_version(keys, args)
  if not call then bind() end
  local replaced = call('GET', keys[1]) or args[2]
  if replaced ~= args[1] then
    call('SET', keys[1], args[1])
    call('SET', keys[2], replaced)
  end
  return replaced
end

redis.register_function('job_merge' .. SUFFIX, job_merge)
redis.register_function('job_merge_expiring' .. SUFFIX, job_merge_expiring)
redis.register_function('job_switch_version' .. SUFFIX, job_switch_version)
redis.register_function{
  function_name = 'job_digests' .. SUFFIX, callback = job_digests, flags = {'no-writes'}
}
redis.register_function('job_replace_if_unchanged' .. SUFFIX, job_replace_if_unchanged)
