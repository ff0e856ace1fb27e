"""Every Lua script streamq runs, with the codes it answers.

Most make a job's stream safe against zombies and retries; ADMIT, SETTLE and PAUSE share the
fleet's per-model slots and budgets. The job's state hash holds ``attempt`` (the attempt allowed
to write), ``writer`` (the chain key of the publisher that claimed it) and ``terminal`` (the type
of the terminal entry, once written). Every write goes through :data:`APPEND` or
:data:`APPEND_MANY`, so a worker that lost its job cannot interleave with the new attempt, a
retried batch never duplicates an entry, and nothing follows the terminal entry.

Checking a job's state before each of its writes cost two commands per entry at a few entries
a second. A publisher instead keeps a *chain*: every APPEND_MANY call stores a token in the
publisher's chain key and names the one it expects to find there. While the chain is intact,
nothing that could change a job's state has happened since the publisher last checked it: a
claim breaks the chain of the job's previous writer (it deletes its key), and a failover that
lost writes, a lost reply or an expired key leaves another token there. So a writer checked
once writes unchecked (``vouched``) until the publisher's chain breaks; then each is checked
again on its next write.
"""

from __future__ import annotations

import hashlib

# KEYS: request, arq job, arq result, queue, fair order, fair tenants, fair clock, owner.
# ARGV: request, ttl, arq job id, arq job, arq expiry (ms), score (ms), wake channel, tenant,
# 1/the tenant's weight, owner ttl, '1' for the tenant to claim the job as its owner.
# -> 1 when the job is new, 0 when the id exists with this very request, -1 when it is another
# tenant's job (its owner, with '1'), else the stored request (the caller compares them as
# JSON: the same request, or an idempotency key reused for another one). arq's enqueue_job in
# one round trip instead of five: same keys, values and expiry as arq's. A new job also gets
# its virtual start tag for fair sharing between tenants: max(clock, the tenant's last tag) +
# 1/weight, in the fair order (see PICK).
ENQUEUE = """
-- A tenant given: the job's owner first (a user the ACL refuses it to fails here, having
-- written nothing). Another tenant's id is refused with -1, nothing written; one nobody owns
-- becomes the tenant's, when the job is new or holds this very request (not on a conflict).
if ARGV[11] == '1' then
  local owner = redis.call('GET', KEYS[8])
  if owner and owner ~= ARGV[8] then return -1 end
  if not owner then
    local stored = redis.call('GET', KEYS[1])
    if not stored or stored == ARGV[1] then
      redis.call('SET', KEYS[8], ARGV[8], 'NX', 'EX', ARGV[10])
    end
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  local stored = redis.call('GET', KEYS[1])
  if stored == ARGV[1] then return 0 end
  return stored
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  redis.call('PSETEX', KEYS[2], ARGV[5], ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[3])
  local clock = tonumber(redis.call('GET', KEYS[7]) or '0')
  local last = tonumber(redis.call('HGET', KEYS[6], ARGV[8]) or '0')
  local tag = string.format('%.17g', math.max(clock, last) + tonumber(ARGV[9]))
  redis.call('ZADD', KEYS[5], tag, ARGV[3])
  redis.call('HSET', KEYS[6], ARGV[8], tag)
  for i = 5, 7 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
end
redis.call('PUBLISH', ARGV[7], '1')
return 1
"""

# KEYS: fair order, fair clock, queue, the worker's pick key. ARGV: how many, now (ms), arq's
# in-progress key prefix, ttl, how many fair entries to look at at most, offset and count of
# arq's queue head, in-progress timeout (ms), this call's token (unique per worker and call).
# -> {started, head}: up to ARGV[1] due jobs from the fair order, lowest virtual start tag
# first, started for this worker as arq starts a job (its in-progress key, holding the token,
# which no other worker's start passes), as a flat list of arq job id, score (ms), ...: one
# round trip where picking, then starting, took two. They are popped from the fair order (the
# clock moves to the highest tag popped); deferred and running ids stay in it, ids arq no
# longer queues leave it. When they are fewer, `head` is arq's queue head (as arq reads it:
# jobs never indexed or put back by an older process still run), not started: the worker starts
# those it does not run already with START (most of a busy queue's head runs, and most often
# on this worker).
# The same call run twice (redis-py resends a command whose reply was lost) answers the same:
# a call that started jobs keeps its answer in the pick key, under its token, for a minute.
# Run again without it, it would find its jobs started and popped, and nobody would run them
# until their in-progress keys expired.
PICK = """
local kept = redis.call('GET', KEYS[4])
if kept then
  kept = cjson.decode(kept)
  if kept[1] == ARGV[9] then return {kept[2], kept[3]} end
end
local want, now, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local picked, started, gone, top = {}, {}, {}, nil
local function start(id, score)
  redis.call('PSETEX', prefix .. id, ARGV[8], ARGV[9])
  picked[#picked + 1] = id
  started[#started + 1] = id
  started[#started + 1] = score
end
-- In small batches: the order may be long, and the ids due are nearly always at its front.
local scanned, batch, limit = 0, math.max(want * 2, 16), tonumber(ARGV[5])
while #picked < want and scanned < limit do
  local entries = redis.call('ZRANGE', KEYS[1], scanned, scanned + batch - 1, 'WITHSCORES')
  if #entries == 0 then break end
  for i = 1, #entries, 2 do
    if #picked >= want then break end
    local id = entries[i]
    local score = redis.call('ZSCORE', KEYS[3], id)
    if not score then
      gone[#gone + 1] = id
    elseif tonumber(score) <= now and redis.call('EXISTS', prefix .. id) == 0 then
      start(id, score)
      gone[#gone + 1] = id
      top = entries[i + 1]
    end
  end
  scanned = scanned + batch
end
if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
if top and tonumber(top) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], top, 'EX', ARGV[4])
end
local head = {}
if #picked < want then
  local seen = {}
  for _, id in ipairs(picked) do seen[id] = true end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', ARGV[6], ARGV[7])
  for _, id in ipairs(ids) do
    if not seen[id] then head[#head + 1] = id end
  end
end
if #started > 0 then
  redis.call('SET', KEYS[4], cjson.encode({ARGV[9], started, head}), 'EX', 60)
end
return {started, head}
"""

# KEYS: fair order, fair clock, queue. ARGV: arq job id, ttl. -> 1 when the job, queued in
# arq's queue again, was put back in the fair order at its front (tag: the clock), unless it
# was still there; 0 when arq does not queue it.
FAIR_REQUEUE = """
if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'NX', redis.call('GET', KEYS[2]) or '0', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: arq in-progress key, queue. ARGV: arq job id, now (ms), in-progress timeout (ms), this
# call's token (unique per worker and call). -> the job's score when this worker may start it;
# false when it runs elsewhere, is gone or is deferred. arq's WATCH/MULTI start of a job in one
# round trip instead of four. The in-progress key holds the token, so the same call run twice
# (redis-py resends a command whose reply was lost) answers the score both times: the second
# run alone would find the job started and answer false, and nobody would run it until the key
# expired.
START = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[4] then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
if not held then redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[4]) end
return score
"""

# Opens the next attempt in the job's state (KEYS[1]; ARGV[1]: ttl; `chain`: the claiming
# publisher's chain key, or '' for one without a chain; `retry`: '1' when the claimer's own
# previous attempt of the job has ended), or returns {0, terminal, 0} when the job had ended.
# The previous attempt's publisher may still be writing (its worker lost the lease): its chain
# is broken, so it checks this job's state before its next write. That key is named by the
# state, not by KEYS (a claim cannot know it before): only on a single Redis, where a publisher
# keeps a chain, and only a key of the claimer's own prefix. Not for the claimer's own retry:
# the attempt before is over, and any older one its process still runs was fenced off by the
# claim after it. Shared by CLAIM and CLAIM_STATE.
_OPEN_ATTEMPT = """
local current = redis.call('HMGET', KEYS[1], 'terminal', 'writer', 'started_ms', 'cancel')
if current[1] then return {0, current[1], 0} end
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
local chains = string.match(chain, '^(.*:publisher:)')
local own = retry == '1' and current[2] == chain
if chains and current[2] and not own and string.sub(current[2], 1, #chains) == chains then
  redis.call('DEL', current[2])
end
local fields = {}
if not current[3] then fields = {'started_ms', now} end
if chain ~= '' then fields[#fields + 1] = 'writer'; fields[#fields + 1] = chain end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
local elapsed = now - tonumber(current[3] or now)
local cancel = current[4] or ''
"""

# KEYS: state, running, request. ARGV: ttl, lease (ms), job id, the publisher's chain key ('':
# none), '1' if the claimer's previous attempt ended (a retry). -> {attempt, cancel flag, ms
# since the first attempt started, the request (or false)}; attempt 0 when the job had ended.
CLAIM = (
    "local chain, retry = ARGV[4] or '', ARGV[5]\n"
    + _OPEN_ATTEMPT
    + """
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), attempt .. ':' .. ARGV[3])
return {attempt, cancel, elapsed, redis.call('GET', KEYS[3])}
"""
)

# KEYS: state. ARGV: ttl, the publisher's chain key ('': none, as on a Redis Cluster), '1' for
# the claimer's retry (as CLAIM's). CLAIM's part on the job's state when the streams live on
# their own Redis (STREAMQ_STREAMS_URL); LEASE is the part on the queue's Redis.
# -> {attempt, cancel flag, ms since the first attempt started}; attempt 0 when it had ended.
CLAIM_STATE = (
    "local chain, retry = ARGV[2] or '', ARGV[3]\n"
    + _OPEN_ATTEMPT
    + "return {attempt, cancel, elapsed}\n"
)

# KEYS: running, request. ARGV: lease (ms), member (attempt:job id). -> the request.
LEASE = """
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
return redis.call('GET', KEYS[2])
"""

# KEYS: running. ARGV: lease (ms), members... Extends the lease of this worker's attempts.
HEARTBEAT = """
local time = redis.call('TIME')
local expiry = time[1] * 1000 + math.floor(time[2] / 1000) + tonumber(ARGV[1])
-- One ZADD for up to 500 attempts (a command each was one per running job every beat).
local scored = {}
for i = 2, #ARGV do
  scored[#scored + 1] = expiry
  scored[#scored + 1] = ARGV[i]
  if #scored == 1000 or i == #ARGV then
    redis.call('ZADD', KEYS[1], 'XX', unpack(scored))
    scored = {}
  end
end
return expiry
"""

# KEYS: running, arq in-progress key, arq job, queue, fair order, fair clock. ARGV: member
# (attempt:job id), attempt, arq job id, arq job, arq expiry (ms), the job's current attempt,
# '1' if it has ended (both read from its state first), ttl. -> 1 when the attempt's lease had
# run out and the job was freed for another worker: queued again (at the front of the fair
# order), and its arq job restored if arq had dropped it (it does when a fenced run ends).
REAP = """
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) > now then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(ARGV[6]) ~= tonumber(ARGV[2]) or ARGV[7] == '1' then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('PSETEX', KEYS[3], ARGV[5], ARGV[4]) end
redis.call('ZADD', KEYS[4], 'NX', now, ARGV[3])
redis.call('ZADD', KEYS[5], 'NX', redis.call('GET', KEYS[6]) or '0', ARGV[3])
redis.call('EXPIRE', KEYS[5], ARGV[8])
return 1
"""

# KEYS: state, events. ARGV: ttl, cancel channel, job id, the fields of a `cancelled` entry.
# -> 'already_<terminal type>' if the job had ended; 'cancelled' when it had not started (the
# entry is written here); 'cancelling' when a worker runs it: the caller then publishes the
# job id on the cancel channel (ARGV[2], ARGV[3]), on the queue's Redis, where workers listen.
CANCEL = """
local terminal = redis.call('HGET', KEYS[1], 'terminal')
if terminal then return 'already_' .. terminal end
redis.call('HSET', KEYS[1], 'cancel', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
if tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0') == 0 then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
  redis.call('HSET', KEYS[1], 'terminal', 'cancelled')
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  return 'cancelled'
end
return 'cancelling'
"""

# What APPEND answers.
APPENDED = 1
FENCED = -1  # another attempt owns the job
ENDED = -2  # the job ended (before this call, or by an entry of it: later entries are dropped)
LOST = -3  # this attempt's claim or earlier entries are missing (lost in a failover)

# append(): one job's entries. `checked`: check the job's state and stream first (else the
# publisher vouches for the writer, checked since its chain last broke). -> 1 written, -1 fenced
# (another attempt owns the job), -2 the job ended (before this call, or by an entry of it:
# later entries are dropped), -3 this attempt's claim or earlier entries are missing (lost in a
# failover). args[from..to]: per entry its seq, terminal type or '', field count, fields...
_APPEND_FUNCTION = """
-- The seq of the newest entry of the stream if this attempt wrote it, else -1.
local function written(events, attempt)
  local newest = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)[1]
  if not newest then return -1 end
  local fields, owner, seq = newest[2], nil, nil
  for j = 1, #fields, 2 do
    if fields[j] == 'attempt' then owner = fields[j + 1] end
    if fields[j] == 'seq' then seq = fields[j + 1] end
  end
  if tonumber(owner) ~= tonumber(attempt) then return -1 end
  return tonumber(seq) or -1
end

local function append(events, state, scratch, attempt, ttl, checked, args, from, to)
  local first = tonumber(args[from]) - 1
  if checked then
    local current = redis.call('HMGET', state, 'attempt', 'terminal')
    local stored = tonumber(current[1] or '0')
    -- An older attempt than ours: our claim was lost (a failover), not taken over by another.
    if stored < tonumber(attempt) then return -3 end
    if stored ~= tonumber(attempt) then return -1 end
    if current[2] then return -2 end
    -- Entries this attempt wrote before are missing (a failover lost them): refuse, so that the
    -- job starts over as a new attempt instead of showing a stream with a hole in it.
    local stored_seq = written(events, attempt)
    if first > stored_seq then return -3 end
    first = stored_seq
  end
  local last, ended, i = first, false, from
  while i <= to and not ended do
    local seq, terminal, n = tonumber(args[i]), args[i + 1], tonumber(args[i + 2])
    if seq > last then
      redis.call('XADD', events, '*', unpack(args, i + 3, i + 2 + n))
      last = seq
      if terminal ~= '' then
        redis.call('HSET', state, 'terminal', terminal)
        ended = true
      end
    end
    i = i + 3 + n
  end
  -- The TTL is set with an attempt's first entries, its terminal one and every 64th: a stream
  -- always ends with one, even one that expired mid-run and was recreated by XADD. The state's
  -- with the same but the first: the attempt's claim has just set it.
  local renewed = ended or (first >= 0 and math.floor(last / 64) ~= math.floor(first / 64))
  if first < 0 or renewed then redis.call('EXPIRE', events, ttl) end
  if renewed then redis.call('EXPIRE', state, ttl) end
  -- Each stream node is created with 4 KB preallocated, which a finished stream would keep;
  -- its copy holds only the bytes in use (13 B a delta for a 300-delta answer). COPY needs
  -- Redis 6.2.
  if ended and redis.pcall('COPY', events, scratch) == 1 then
    redis.call('RENAME', scratch, events)
  end
  if ended and i <= to then return -2 end
  return 1
end
"""

# KEYS: events, state, scratch (for the copy). ARGV: attempt, ttl, then per entry: seq, terminal
# type or '', field count, fields... -> append()'s answer. Always checks (on a Redis Cluster,
# where one call cannot span jobs).
APPEND = (
    _APPEND_FUNCTION
    + "return append(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], true, ARGV, 3, #ARGV)\n"
)

# APPEND for several jobs' streams in one call (their keys in one Redis: not for a cluster).
# KEYS: the publisher's chain key, then events, state, scratch of each job in turn. ARGV: ttl,
# the token the chain should hold ('': no key, for a new publisher), this call's token, then
# for each job: its attempt, '1' if the publisher vouches for its writer, how many arguments
# its entries take, and those (as APPEND's). -> {1 if the chain was intact (else every job was
# checked, and the chain holds this call's token with '!' appended), then append()'s answer
# for each job, or the text of the error Redis raised on that job's keys (prefixed "ERR "):
# one job's keys never fail another's entries}.
APPEND_MANY = (
    _APPEND_FUNCTION
    + """
-- SET ... GET (Redis 6.2): the chain's check and its next link in one command.
local stored = redis.pcall('SET', KEYS[1], ARGV[3], 'EX', ARGV[1], 'GET')
if type(stored) == 'table' and stored.err then
  stored = redis.call('GET', KEYS[1])
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
end
local intact = (stored or '') == ARGV[2]
if not intact then redis.call('SET', KEYS[1], ARGV[3] .. '!', 'EX', ARGV[1]) end
local results, k, i = {intact and 1 or 0}, 2, 4
while i <= #ARGV do
  local count = tonumber(ARGV[i + 2])
  local checked = not (intact and ARGV[i + 1] == '1')
  local ok, result = pcall(append, KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[i], ARGV[1], checked,
    ARGV, i + 3, i + 2 + count)
  if not ok then
    result = 'ERR ' .. (type(result) == 'table' and tostring(result.err) or tostring(result))
  end
  results[#results + 1] = result
  k, i = k + 3, i + 3 + count
end
return results
"""
)


# What ADMIT answers when the generation may start.
ACQUIRED = 1

# KEYS: pause, slots, then for each budget that applies: its window (a sorted set of
# `member|tokens` scored by when they count from, ms), its head (the first job refused for
# tokens: `member|tokens`) and its running total of the window's tokens. ARGV: member, slot
# limit (0: none), lease (ms), window (ms), estimated tokens, head ttl (ms), then per budget:
# token limit, request limit (0: none).
# -> {ACQUIRED, 0, ''} when admitted: a slot is taken and an entry added to every window, all
# at once; else {0, ms to wait (0: unknown), reason}: 'rate_limited' (a 429 paused the model),
# 'concurrency', 'request_budget' or 'token_budget'. An entry counts for `window` ms. Other jobs
# leave room for the head's tokens, so a large job is not starved by a stream of small ones; a
# job larger than the token limit is admitted alone into an empty window. The total spares
# reading the whole window per decision (waiting jobs ask often); a lost total is recounted.
# A member already in its windows (the same call again) is admitted without counting it twice.
ADMIT = """
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then return {0, paused, 'rate_limited'} end
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
local limit, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if not redis.call('ZSCORE', KEYS[2], ARGV[1]) and redis.call('ZCARD', KEYS[2]) >= limit then
    return {0, 0, 'concurrency'}
  end
end
local window, tokens = tonumber(ARGV[4]), tonumber(ARGV[5])
local mine = ARGV[1] .. '|' .. ARGV[5]
local function cost(entry) return tonumber(string.match(entry, '|(%d+)$') or '0') end
local budgets, totals = (#KEYS - 2) / 3, {}
-- Already in its windows: this very call ran before (redis-py resends a command whose reply
-- was lost). Counted again, its tokens would stay in the running totals.
if budgets > 0 and redis.call('ZSCORE', KEYS[3], mine) then
  if limit > 0 then redis.call('ZADD', KEYS[2], now + lease, ARGV[1]) end
  return {1, 0, ''}
end
for k = 1, budgets do
  local key, head, total = KEYS[3 * k], KEYS[3 * k + 1], KEYS[3 * k + 2]
  local tokens_limit, requests_limit = tonumber(ARGV[5 + 2 * k]), tonumber(ARGV[6 + 2 * k])
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', now - window)
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window) end
  local count, stored = redis.call('ZCARD', key), redis.call('GET', total)
  local used = 0
  if count > 0 and stored then
    used = tonumber(stored)
    for _, entry in ipairs(gone) do used = used - cost(entry) end
    if #gone > 0 then redis.call('SET', total, math.max(0, used), 'KEEPTTL') end
  elseif count > 0 then
    for _, entry in ipairs(redis.call('ZRANGE', key, 0, -1)) do used = used + cost(entry) end
    redis.call('SET', total, used, 'PX', math.max(1, redis.call('PTTL', key)))
  end
  used = math.max(0, used)
  totals[k] = used
  if requests_limit > 0 and count >= requests_limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {0, math.max(1, tonumber(oldest[2]) + window - now), 'request_budget'}
  end
  if tokens_limit > 0 then
    local first = redis.call('GET', head)
    local reserved = (first and first ~= mine) and cost(first) or 0
    if (count > 0 or reserved > 0) and used + reserved + tokens > tokens_limit then
      if not first then redis.call('SET', head, mine, 'PX', ARGV[6]) end
      if first == mine then redis.call('PEXPIRE', head, ARGV[6]) end
      local at, free = 0, 0
      while at < count and used + reserved + tokens > tokens_limit do
        local entries = redis.call('ZRANGE', key, at, at + 31, 'WITHSCORES')
        for i = 1, #entries, 2 do
          used = used - cost(entries[i])
          free = tonumber(entries[i + 1]) + window - now
          if used + reserved + tokens <= tokens_limit then break end
        end
        at = at + 32
      end
      return {0, free, 'token_budget'}
    end
  end
end
if limit > 0 then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], lease * 2)
end
for k = 1, budgets do
  local key, head, total = KEYS[3 * k], KEYS[3 * k + 1], KEYS[3 * k + 2]
  redis.call('ZADD', key, now, mine)
  redis.call('PEXPIRE', key, window * 2)
  redis.call('SET', total, totals[k] + tokens, 'PX', window * 2)
  if redis.call('GET', head) == mine then redis.call('DEL', head) end
end
return {1, 0, ''}
"""

# KEYS: each budget's window and running total (as ADMIT's). ARGV: member, the tokens its entry
# counts, the tokens it should count, window (ms) or ''. Replaces the member's entry (admitted
# by ADMIT) by one of the new count. With a window, stamped now: its request reached the
# upstream, which counts it from then (added back if it had left the window); without, it keeps
# its time (and is not added back).
SETTLE = """
local old, new = ARGV[1] .. '|' .. ARGV[2], ARGV[1] .. '|' .. ARGV[3]
local now = nil
if ARGV[4] ~= '' then
  local time = redis.call('TIME')
  now = time[1] * 1000 + math.floor(time[2] / 1000)
end
for k = 1, #KEYS, 2 do
  local admitted = redis.call('ZSCORE', KEYS[k], old)
  if admitted or now then
    redis.call('ZREM', KEYS[k], old)
    redis.call('ZADD', KEYS[k], now or admitted, new)
    local stored = redis.call('GET', KEYS[k + 1])
    if stored then
      local total = tonumber(stored) + tonumber(ARGV[3]) - (admitted and tonumber(ARGV[2]) or 0)
      redis.call('SET', KEYS[k + 1], math.max(0, total), 'KEEPTTL')
    end
    if now then
      redis.call('PEXPIRE', KEYS[k], tonumber(ARGV[4]) * 2)
      redis.call('PEXPIRE', KEYS[k + 1], tonumber(ARGV[4]) * 2)
    end
  end
end
"""

# KEYS: pause. ARGV: ms. Pauses the model unless it is already paused for longer.
PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
"""


def script_sha(script: str) -> str:
    """The SHA1 that EVALSHA knows ``script`` by."""
    return hashlib.sha1(script.encode()).hexdigest()
