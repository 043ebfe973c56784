-- mq's queue as functions of the database (schema version 6 and later): each step a client takes is one
-- call, one transaction, one round trip. ``mq admin init`` installs them (CREATE OR REPLACE,
-- every time), with ``search_path`` pinned to the schema of mq's tables ({schema}).
--
-- Identity: in a lab where every member connects with a database role of their own, the
-- user of every ticket, lock and audit record is ``session_user``, set by the server; such
-- roles (members of mq_user) have no rights on the tables and act only through these
-- SECURITY DEFINER functions, which let them release or cancel only what is theirs.
-- Forcing, offline/online and priorities above the lab's max_priority need mq_admin. The
-- role that owns the tables (a lab sharing one role, as before) is trusted: the user name
-- its clients give is taken as it is (``mq_who``).
--
-- Constants: 28017 = 0x6D71 (the queue mutex: pg_advisory_xact_lock(28017, 0)), 28018 =
-- 0x6D72 (the owners' liveness locks), {silent} s without a beat is a silent owner.

-- The helpers called at every step are PL/pgSQL, not SQL: a SQL function with its own
-- search_path is planned again at every call, a PL/pgSQL function's plans are kept by the
-- session (the queue's hot steps went from 5.9 to 1.4 ms for a wait).
CREATE OR REPLACE FUNCTION mq_trusted() RETURNS boolean LANGUAGE plpgsql STABLE
SET search_path = {schema}, pg_temp AS $$
BEGIN
    RETURN session_user::text = (SELECT c.relowner::regrole::text FROM pg_class c
                                  WHERE c.oid = to_regclass({schema_literal} || '.mq_locks'))
        OR coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user), false);
END $$;

CREATE OR REPLACE FUNCTION mq_who(p_claimed text) RETURNS text LANGUAGE plpgsql STABLE
SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF coalesce(p_claimed, '') <> '' AND mq_trusted() THEN
        RETURN p_claimed;
    END IF;
    RETURN session_user::text;
END $$;

CREATE OR REPLACE FUNCTION mq_is_admin() RETURNS boolean LANGUAGE plpgsql STABLE
SET search_path = {schema}, pg_temp AS $$
BEGIN
    RETURN mq_trusted() OR (to_regrole('mq_admin') IS NOT NULL AND pg_has_role(session_user, 'mq_admin', 'MEMBER'));
END $$;

CREATE OR REPLACE FUNCTION mq_need_admin(p_what text) RETURNS void LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF NOT mq_is_admin() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ003', MESSAGE = format(
            '%s needs membership of the mq_admin role: ask an admin to run mq admin grant-admin %s',
            p_what, session_user);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION mq_now() RETURNS float8 LANGUAGE sql VOLATILE AS $$
    SELECT extract(epoch FROM clock_timestamp())::float8
$$;

CREATE OR REPLACE FUNCTION mq_audit_add(p_user text, p_event text, p_board text, p_target text, p_fields jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = {schema}, pg_temp AS $$
BEGIN
    INSERT INTO mq_audit (time, event, username, board, target, fields)
    VALUES (round(extract(epoch FROM clock_timestamp())::numeric, 3)::float8, p_event, p_user, p_board, p_target,
            coalesce(p_fields, '{{}}'::jsonb));
END $$;

CREATE OR REPLACE FUNCTION mq_incarnation_token() RETURNS text LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE v_token text;
BEGIN
    INSERT INTO mq_incarnation (id, token) VALUES (1, md5(random()::text || clock_timestamp()::text))
    ON CONFLICT (id) DO NOTHING;
    SELECT token INTO v_token FROM mq_incarnation WHERE id = 1;
    RETURN v_token;
END $$;

-- Every owner's state: live, suspect (lost within the grace period) or dead (see rows.py).
CREATE OR REPLACE FUNCTION mq_states(p_grace float8) RETURNS jsonb LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    RETURN mq_states_marking(p_grace, true);
END $$;

-- ... p_mark: an owner found lost is marked so (the start of its grace period); a peek (no
-- queue lock) does not write, and counts a loss not marked yet from now.
CREATE OR REPLACE FUNCTION mq_states_marking(p_grace float8, p_mark boolean) RETURNS jsonb LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE v_states jsonb;
BEGIN
    WITH held AS (
        SELECT l.objid::bigint AS id FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.classid = 28018 AND l.objsubid = 2 AND l.granted
           AND l.mode = 'ExclusiveLock' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())),
    marked AS (
        UPDATE mq_owners SET lost_at = clock_timestamp()
         WHERE p_mark AND lost_at IS NULL AND id NOT IN (SELECT id FROM held) RETURNING id, lost_at),
    x AS (
        SELECT o.id, o.backend_pid, o.id IN (SELECT id FROM held) AS live,
               extract(epoch FROM coalesce(m.lost_at, o.lost_at))::float8 AS lost_at,
               o.server_start IS NOT DISTINCT FROM pg_postmaster_start_time()
                   AND o.incarnation IS NOT DISTINCT FROM (SELECT token FROM mq_incarnation) AS same_server,
               extract(epoch FROM coalesce(b.seen_at, o.connected))::float8 AS seen,
               EXISTS (SELECT 1 FROM mq_tickets t WHERE t.owner = o.id)
                   OR EXISTS (SELECT 1 FROM mq_locks k WHERE k.session_owner = o.id
                                                        AND (k.session OR NOT k.fetched)) AS placed,
               mq_now() AS now
          FROM mq_owners o LEFT JOIN mq_beats b ON b.owner = o.id LEFT JOIN marked m ON m.id = o.id)
    SELECT coalesce(jsonb_object_agg(x.id::text, CASE
            WHEN x.live AND x.now - x.seen > {silent} AND x.placed
                THEN jsonb_build_object('state', 'dead', 'lost_at', x.seen, 'silent_pid', x.backend_pid)
            WHEN x.live THEN jsonb_build_object('state', 'live', 'seen', x.seen)
            WHEN x.same_server THEN jsonb_build_object('state', 'dead', 'lost_at', coalesce(x.lost_at, x.now))
            WHEN x.lost_at IS NULL OR x.now - x.lost_at <= p_grace
                THEN jsonb_build_object('state', 'suspect', 'lost_at', coalesce(x.lost_at, x.now))
            ELSE jsonb_build_object('state', 'dead', 'lost_at', x.lost_at) END), '{{}}'::jsonb)
      INTO v_states FROM x;
    RETURN v_states;
END $$;

CREATE OR REPLACE FUNCTION mq_state_of(p_states jsonb, p_owner integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_states -> p_owner::text ->> 'state', 'dead')
$$;

-- A lock whose client is dead (a run lock, or a grant not confirmed yet), or past its -T.
CREATE OR REPLACE FUNCTION mq_dead_session(p_lock mq_locks, p_states jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_lock.session OR p_lock.session_owner IS NOT NULL)
       AND (p_lock.session_owner IS NULL OR mq_state_of(p_states, p_lock.session_owner) = 'dead')
$$;

CREATE OR REPLACE FUNCTION mq_reclaimable(p_lock mq_locks, p_states jsonb, p_now float8) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT NOT p_lock.maintenance AND (mq_dead_session(p_lock, p_states)
        OR (p_lock.timeout > 0 AND p_now - p_lock.since_ns / 1e9 > p_lock.timeout))
$$;

CREATE OR REPLACE FUNCTION mq_lock_json(p_lock mq_locks, p_states jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_array(p_lock.board, p_lock.username, p_lock.uid, p_lock.key, p_lock.timeout, p_lock.since_ns,
                             p_lock.grant_no, p_lock.pool, p_lock.session, p_lock.session_owner, p_lock.maintenance,
                             CASE WHEN p_lock.session_owner IS NULL THEN NULL
                                  ELSE mq_state_of(p_states, p_lock.session_owner) END,
                             p_lock.reclaimed_from, p_lock.reclaimed_timeout, p_lock.ticket, p_lock.fetched)
$$;

-- Remove a lock past its -T or a dead client's, logged; why it could be.
CREATE OR REPLACE FUNCTION mq_reclaim(p_user text, p_lock mq_locks, p_states jsonb, p_now float8,
                                      p_maintenance boolean) RETURNS text LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE v_why text;
BEGIN
    v_why := CASE WHEN mq_dead_session(p_lock, p_states)
                  THEN CASE WHEN p_lock.session THEN 'dead-session' ELSE 'unconfirmed' END ELSE 'expired' END;
    DELETE FROM mq_locks WHERE board = p_lock.board;
    PERFORM mq_audit_add(p_user, 'reclaim', p_lock.board, NULL,
        jsonb_build_object('reason', v_why, 'previous_user', p_lock.username, 'previous_key', p_lock.key,
                           'grant', p_lock.grant_no, 'timeout', p_lock.timeout,
                           'age', round((p_now - p_lock.since_ns / 1e9)::numeric, 3))
        || CASE WHEN p_maintenance THEN '{{"maintenance": true}}'::jsonb ELSE '{{}}'::jsonb END);
    RETURN v_why;
END $$;

CREATE OR REPLACE FUNCTION mq_place_maintenance(p_board text) RETURNS void LANGUAGE sql
SET search_path = {schema}, pg_temp AS $$
    INSERT INTO mq_locks (board, username, uid, key, timeout, since_ns, maintenance)
    SELECT p_board, o.username, 0, 'offline: ' || o.reason, 0, (mq_now() * 1e9)::bigint, true
      FROM mq_offline o WHERE o.board = p_board
$$;

-- Offline boards (all, or p_board) get their maintenance lock where the lock is gone or may be reclaimed.
CREATE OR REPLACE FUNCTION mq_settle(p_user text, p_states jsonb, p_now float8, p_board text, p_audited boolean)
RETURNS void LANGUAGE plpgsql SET search_path = {schema}, pg_temp AS $$
DECLARE
    m record;
    k mq_locks;
    v_after text;
BEGIN
    FOR m IN SELECT * FROM mq_offline WHERE p_board IS NULL OR board = p_board ORDER BY board LOOP
        SELECT * INTO k FROM mq_locks WHERE board = m.board;
        IF NOT FOUND THEN
            v_after := 'restored';
        ELSIF k.maintenance OR NOT mq_reclaimable(k, p_states, p_now) THEN
            CONTINUE;
        ELSE
            v_after := mq_reclaim(p_user, k, p_states, p_now, true);
        END IF;
        PERFORM mq_place_maintenance(m.board);
        IF p_audited THEN
            PERFORM mq_audit_add(p_user, 'maintenance-lock', m.board, NULL,
                jsonb_build_object('reason', m.reason, 'offline_by', m.username, 'after', v_after));
        END IF;
    END LOOP;
END $$;

-- Tickets of dead owners go (logged); silent owners' sessions are ended; dead owners that own
-- nothing any more go.
CREATE OR REPLACE FUNCTION mq_clear_dead(p_user text, p_states jsonb, p_now float8, p_self integer)
RETURNS void LANGUAGE plpgsql SET search_path = {schema}, pg_temp AS $$
DECLARE
    r_ticket record;
    r_owner record;
    v_ended boolean;
BEGIN
    FOR r_ticket IN DELETE FROM mq_tickets WHERE mq_state_of(p_states, owner) = 'dead'
             RETURNING seq, target, key, username, pid LOOP
        PERFORM mq_audit_add(p_user, 'dead-waiter', NULL, r_ticket.target,
            jsonb_build_object('key', r_ticket.key, 'waiter', r_ticket.username, 'pid', r_ticket.pid));
        PERFORM pg_notify('mq_queue', 'gone ' || r_ticket.seq);
    END LOOP;
    FOR r_owner IN SELECT key::integer AS id, (value ->> 'silent_pid')::integer AS pid, (value ->> 'lost_at')::float8 AS seen
               FROM jsonb_each(p_states) WHERE value ? 'silent_pid' AND key::integer <> coalesce(p_self, -1) LOOP
        BEGIN
            v_ended := pg_terminate_backend(r_owner.pid);
        EXCEPTION WHEN OTHERS THEN
            v_ended := false;  -- no right to (the owner of mq's tables needs pg_signal_backend)
        END;
        PERFORM mq_audit_add(p_user, 'force', NULL, NULL,
            jsonb_build_object('reason', 'client silent', 'owner', r_owner.id, 'pid', r_owner.pid,
                               'silent', round((p_now - r_owner.seen)::numeric, 3), 'ended', v_ended));
    END LOOP;
    DELETE FROM mq_owners o
     WHERE p_states -> o.id::text ->> 'state' = 'dead' AND o.id <> coalesce(p_self, -1)
       AND NOT EXISTS (SELECT 1 FROM mq_tickets t WHERE t.owner = o.id)
       AND NOT EXISTS (SELECT 1 FROM mq_locks l WHERE l.session_owner = o.id);
    DELETE FROM mq_beats b WHERE NOT EXISTS (SELECT 1 FROM mq_owners o WHERE o.id = b.owner);
END $$;

-- Hand board p_board to ticket p_ticket (reclaiming what is there): the lock, bound to the
-- ticket's owner until it confirms (a run lock: for as long as it runs), the ticket gone, logged.
CREATE OR REPLACE FUNCTION mq_grant(p_ticket mq_tickets, p_board text, p_states jsonb, p_now float8)
RETURNS void LANGUAGE plpgsql SET search_path = {schema}, pg_temp AS $$
DECLARE
    k mq_locks;
    v_why text;
    v_from text;
    v_from_timeout integer := 0;
    v_grant bigint;
    v_pool text := CASE WHEN p_ticket.target <> p_board THEN p_ticket.target ELSE '' END;
BEGIN
    SELECT * INTO k FROM mq_locks WHERE board = p_board;
    IF FOUND THEN
        v_why := mq_reclaim(p_ticket.username, k, p_states, p_now, false);
        v_from := k.username;
        IF v_why = 'expired' THEN v_from_timeout := k.timeout; END IF;
    END IF;
    INSERT INTO mq_locks (board, username, uid, key, timeout, since_ns, grant_no, pool, session, session_owner,
                          ticket, reclaimed_from, reclaimed_timeout, request)
    VALUES (p_board, p_ticket.username, p_ticket.uid, p_ticket.key, p_ticket.timeout, (mq_now() * 1e9)::bigint,
            nextval('mq_grants'), v_pool, p_ticket.session, p_ticket.owner, p_ticket.seq, coalesce(v_from, ''),
            v_from_timeout, p_ticket.request)
    RETURNING grant_no INTO v_grant;
    DELETE FROM mq_tickets WHERE seq = p_ticket.seq;
    PERFORM mq_audit_add(p_ticket.username, 'grant', p_board, NULL,
        jsonb_build_object('pool', v_pool, 'key', p_ticket.key, 'grant', v_grant, 'timeout', p_ticket.timeout,
                           'waited', round((p_now - p_ticket.created)::numeric, 3),
                           'session', CASE WHEN p_ticket.session THEN true END));
    PERFORM pg_notify('mq_queue', 'grant ' || p_ticket.seq);
END $$;

-- The queue walk (the file engine's queue.walk_queue): every board that can be taken now goes to
-- the earliest counted ticket that can use it, a board with no lock before one to reclaim; a
-- ticket whose client is reconnecting (suspect) keeps its board waiting for it.
CREATE OR REPLACE FUNCTION mq_walk(p_user text, p_states jsonb, p_now float8) RETURNS void LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE
    t mq_tickets;
    b text;
    v_state text;
    v_usable text[];
    v_choice text;
    v_taken text[] := '{{}}';
    v_avail jsonb := '{{}}';
    k mq_locks;
BEGIN
    PERFORM mq_settle(p_user, p_states, p_now, NULL, true);
    FOR t IN SELECT * FROM mq_tickets WHERE NOT cancelled ORDER BY coalesce(vtime, created), seq LOOP
        v_state := mq_state_of(p_states, t.owner);
        CONTINUE WHEN v_state = 'dead';
        v_usable := '{{}}';
        FOREACH b IN ARRAY t.boards LOOP
            CONTINUE WHEN b = ANY (v_taken);
            IF NOT v_avail ? b THEN
                SELECT * INTO k FROM mq_locks WHERE board = b;
                v_avail := v_avail || jsonb_build_object(b, CASE
                    WHEN EXISTS (SELECT 1 FROM mq_offline WHERE board = b) THEN 'busy'
                    WHEN NOT FOUND THEN 'vacant'
                    WHEN mq_reclaimable(k, p_states, p_now) THEN 'reclaimable'
                    ELSE 'busy' END);
            END IF;
            IF v_avail ->> b <> 'busy' THEN
                v_usable := v_usable || b;
            END IF;
        END LOOP;
        CONTINUE WHEN cardinality(v_usable) = 0;
        v_choice := NULL;
        FOREACH b IN ARRAY v_usable LOOP
            IF v_avail ->> b = 'vacant' THEN v_choice := b; EXIT; END IF;
        END LOOP;
        v_choice := coalesce(v_choice, v_usable[1]);
        v_taken := v_taken || v_choice;
        IF v_state = 'live' THEN
            PERFORM mq_grant(t, v_choice, p_states, p_now);
        END IF;
    END LOOP;
END $$;

-- The snapshot a waiter computes its outlook from, and listings show (rows.from_json).
CREATE OR REPLACE FUNCTION mq_snapshot_json(p_states jsonb, p_now float8) RETURNS jsonb LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    RETURN jsonb_build_object(
        'now', p_now,
        'owners', p_states,
        'tickets', coalesce((SELECT jsonb_agg(jsonb_build_array(t.seq, t.username, t.uid, t.pid, t.host, t.key,
                                  t.target, t.boards, t.created, t.priority, t.owner, t.cancelled,
                                  coalesce(t.vtime, t.created), t.session, t.timeout)
                                  ORDER BY coalesce(t.vtime, t.created), t.seq) FROM mq_tickets t), '[]'::jsonb),
        'locks', coalesce((SELECT jsonb_agg(mq_lock_json(l, p_states) ORDER BY l.board) FROM mq_locks l), '[]'::jsonb),
        'offline', coalesce((SELECT jsonb_agg(jsonb_build_array(o.board, o.reason, o.username, o.since)
                                              ORDER BY o.board) FROM mq_offline o), '[]'::jsonb));
END $$;

-- This session's owner, or an error (another session's, or none).
CREATE OR REPLACE FUNCTION mq_own(p_owner integer) RETURNS void LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM mq_owners WHERE id = p_owner AND backend_pid = pg_backend_pid()) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ004', MESSAGE = format('owner %s is not this session''s', p_owner);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION mq_beat(p_owner integer) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {schema}, pg_temp AS $$
BEGIN
    INSERT INTO mq_beats (owner, seen_at)
    SELECT p_owner, clock_timestamp() FROM mq_owners WHERE id = p_owner AND backend_pid = pg_backend_pid()
    ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at;
END $$;

-- Register owner p_owner (an id the client chose) on this session, taking its liveness lock.
CREATE OR REPLACE FUNCTION mq_register(p_owner integer, p_user text, p_pid integer, p_host text)
RETURNS void LANGUAGE plpgsql SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM mq_owners WHERE id = p_owner AND backend_pid = pg_backend_pid()) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM mq_owners WHERE id = p_owner) OR NOT pg_try_advisory_lock(28018, p_owner) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ005', MESSAGE = format('owner id %s is taken', p_owner);
    END IF;
    INSERT INTO mq_owners (id, username, pid, host, backend_pid, server_start, incarnation, role)
    VALUES (p_owner, p_user, p_pid, p_host, pg_backend_pid(), pg_postmaster_start_time(), mq_incarnation_token(),
            session_user);
    PERFORM mq_beat(p_owner);
END $$;

-- The lab's priority bound for waits that ask for one (admins are not bound).
CREATE OR REPLACE FUNCTION mq_check_priority(p_priority integer) RETURNS void LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE v_max integer := coalesce((SELECT (queue ->> 'max_priority')::integer FROM mq_inventory WHERE id = 1), 1000);
BEGIN
    IF abs(p_priority) > v_max AND NOT mq_is_admin() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ003', MESSAGE = format(
            'a priority above %s needs membership of the mq_admin role: ask an admin to run mq admin grant-admin %s',
            v_max, session_user);
    END IF;
END $$;

-- How far ahead of its arrival a ticket is served (policy.Rule.shift): the client's word when it
-- is trusted, else the lab's stored [queue] rules (fifo when none are stored).
CREATE OR REPLACE FUNCTION mq_shift(p_target text, p_priority integer, p_claimed float8) RETURNS float8
LANGUAGE plpgsql STABLE SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_rules jsonb := (SELECT queue -> 'rules' FROM mq_inventory WHERE id = 1);
    v_rule jsonb;
BEGIN
    IF mq_trusted() THEN
        RETURN coalesce(p_claimed, 0);
    END IF;
    v_rule := coalesce(v_rules -> p_target, v_rules -> '');
    IF v_rule IS NULL OR v_rule ->> 'policy' <> 'priority' OR p_priority = 0 THEN
        RETURN 0;
    END IF;
    RETURN p_priority * coalesce(nullif((v_rule ->> 'aging')::float8, 0), 1e9);
END $$;

-- The priority of a wait that asks for none: the lab's [queue.keys] (first match), then [queue.users].
CREATE OR REPLACE FUNCTION mq_configured_priority(p_user text, p_key text, p_claimed integer) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_queue jsonb := (SELECT queue FROM mq_inventory WHERE id = 1);
    r jsonb;
BEGIN
    IF mq_trusted() OR v_queue IS NULL THEN
        RETURN coalesce(p_claimed, 0);
    END IF;
    FOR r IN SELECT * FROM jsonb_array_elements(coalesce(v_queue -> 'keys', '[]'::jsonb)) LOOP
        IF p_key ~ (r ->> 0) THEN RETURN (r ->> 1)::integer; END IF;
    END LOOP;
    FOR r IN SELECT * FROM jsonb_array_elements(coalesce(v_queue -> 'users', '[]'::jsonb)) LOOP
        IF p_user = r ->> 0 THEN RETURN (r ->> 1)::integer; END IF;
    END LOOP;
    RETURN 0;
END $$;

CREATE OR REPLACE FUNCTION mq_outcome(p_seq bigint, p_owner integer, p_states jsonb, p_now float8) RETURNS jsonb
LANGUAGE plpgsql SET search_path = {schema}, pg_temp AS $$
DECLARE k mq_locks;
BEGIN
    UPDATE mq_locks SET fetched = true WHERE ticket = p_seq AND session_owner = p_owner RETURNING * INTO k;
    IF FOUND THEN
        RETURN jsonb_build_object('seq', p_seq, 'granted', mq_lock_json(k, p_states));
    END IF;
    RETURN jsonb_build_object('seq', p_seq, 'snapshot', mq_snapshot_json(p_states, p_now));
END $$;

-- A wait: queue a ticket (or find the one an earlier try of this call queued), walk, and say
-- whether it got a board; p_once: a wait of no time (not granted: it leaves, logged).
-- A wait for one board: refused at once if the board is offline (a pool skips it; a wait for
-- it alone would never end), or if the caller holds it already.
CREATE OR REPLACE FUNCTION mq_check_alone(p_user text, p_board text, p_key text, p_grace float8, p_now float8)
RETURNS void LANGUAGE plpgsql SET search_path = {schema}, pg_temp AS $$
DECLARE
    m mq_offline;
    k mq_locks;
BEGIN
    SELECT * INTO m FROM mq_offline WHERE board = p_board;
    IF FOUND THEN
        PERFORM mq_fail('MQ002', 'offline', jsonb_build_object('board', p_board, 'reason', m.reason,
                                                               'user', m.username, 'since', m.since));
    END IF;
    SELECT * INTO k FROM mq_locks WHERE board = p_board;
    IF FOUND AND NOT k.maintenance AND k.username = p_user AND p_key IN ('0', k.key)
       AND NOT mq_reclaimable(k, mq_states(p_grace), p_now) THEN
        PERFORM mq_fail('MQ006', 'already held', jsonb_build_object('board', p_board, 'held_key', k.key,
                                                                    'asked_key', p_key));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION mq_take(p_owner integer, p_user text, p_uid integer, p_pid integer, p_host text,
                                   p_target text, p_key text, p_boards text[], p_priority integer,
                                   p_requested boolean, p_shift float8, p_session boolean, p_timeout integer,
                                   p_grace float8, p_once boolean, p_request bigint) RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_user text := mq_who(p_user);
    v_priority integer;
    t mq_tickets;
    k mq_locks;
    v_states jsonb;
    v_now float8;
    v_result jsonb;
BEGIN
    IF p_requested THEN
        PERFORM mq_check_priority(p_priority);
        v_priority := p_priority;
    ELSE
        v_priority := mq_configured_priority(v_user, p_key, p_priority);
    END IF;
    PERFORM pg_advisory_xact_lock(28017, 0);
    PERFORM mq_register(p_owner, v_user, p_pid, p_host);
    PERFORM mq_beat(p_owner);
    -- an earlier try of this very call committed (a restart swallowed its reply): its grant, or its ticket
    UPDATE mq_locks SET fetched = true WHERE session_owner = p_owner AND request = p_request RETURNING * INTO k;
    v_now := mq_now();
    IF FOUND THEN
        RETURN jsonb_build_object('seq', k.ticket, 'granted', mq_lock_json(k, mq_states(p_grace)));
    END IF;
    SELECT * INTO t FROM mq_tickets WHERE owner = p_owner AND request = p_request;
    IF NOT FOUND THEN
        IF p_boards = ARRAY[p_target] THEN
            PERFORM mq_check_alone(v_user, p_target, p_key, p_grace, v_now);
        END IF;
        INSERT INTO mq_tickets (username, uid, pid, host, key, target, boards, created, priority, owner, vtime,
                                session, timeout, request)
        VALUES (v_user, p_uid, p_pid, p_host, p_key, p_target, p_boards, v_now, v_priority, p_owner,
                v_now - mq_shift(p_target, v_priority, p_shift), p_session, p_timeout, p_request)
        RETURNING * INTO t;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM mq_tickets WHERE seq <> t.seq) AND NOT EXISTS (SELECT 1 FROM mq_offline)
       AND EXISTS (SELECT 1 FROM unnest(p_boards) AS mine (board)
                    WHERE NOT EXISTS (SELECT 1 FROM mq_locks held WHERE held.board = mine.board)) THEN
        -- Nobody else waits, nothing is offline and one of its boards is free: the walk grants
        -- it that board whatever anyone's state, so only the caller's is needed (it is live: it
        -- called), not everyone's (a read of pg_locks).
        v_states := jsonb_build_object(p_owner::text, jsonb_build_object('state', 'live', 'seen', v_now));
    ELSE
        v_states := mq_states(p_grace);
        PERFORM mq_clear_dead(v_user, v_states, v_now, p_owner);
    END IF;
    PERFORM mq_walk(v_user, v_states, v_now);
    v_result := mq_outcome(t.seq, p_owner, v_states, v_now);
    IF p_once AND NOT v_result ? 'granted' THEN
        DELETE FROM mq_tickets WHERE seq = t.seq;
        PERFORM pg_notify('mq_queue', 'gone ' || t.seq);
        PERFORM mq_audit_add(v_user, 'timeout', NULL, p_target, jsonb_build_object('key', p_key, 'waited', 0.0));
        RETURN v_result || jsonb_build_object('timeout', true, 'created', t.created, 'priority', t.priority,
                                              'user', v_user);
    END IF;
    IF NOT v_result ? 'granted' THEN
        -- It waits: it listens from this transaction's commit, before any walk can grant it a
        -- board (walks hold the queue lock this call holds), so no look is needed to catch one
        -- made between this call and a LISTEN of its own.
        EXECUTE 'LISTEN mq_queue';
        v_result := v_result || jsonb_build_object('listening', true);
    END IF;
    RETURN v_result || jsonb_build_object('created', t.created, 'priority', t.priority, 'user', v_user);
END $$;

-- A waiter's look: its grant (made by any walk), or the queue as it stands; 'lost' when its
-- ticket was cleared, 'cancelled' when it was cancelled (it leaves, logged).
CREATE OR REPLACE FUNCTION mq_look(p_owner integer, p_seq bigint, p_grace float8) RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    t mq_tickets;
    k mq_locks;
    v_states jsonb;
    v_now float8 := mq_now();
BEGIN
    -- The grant a walk made for it since (what most looks are for: the grantee woken by its
    -- notification): fetched without the queue lock, which the lock's row lock makes safe.
    UPDATE mq_locks SET fetched = true
     WHERE ticket = p_seq AND session_owner = p_owner
       AND EXISTS (SELECT 1 FROM mq_owners WHERE id = p_owner AND backend_pid = pg_backend_pid())
    RETURNING * INTO k;
    IF FOUND THEN
        PERFORM mq_beat(p_owner);
        RETURN jsonb_build_object('seq', p_seq, 'granted',
            mq_lock_json(k, jsonb_build_object(p_owner::text, jsonb_build_object('state', 'live', 'seen', v_now))));
    END IF;
    PERFORM pg_advisory_xact_lock(28017, 0);
    IF NOT EXISTS (SELECT 1 FROM mq_owners WHERE id = p_owner) THEN  -- cleared as dead, with its ticket
        RETURN jsonb_build_object('seq', p_seq, 'lost', true);
    END IF;
    PERFORM mq_own(p_owner);
    PERFORM mq_beat(p_owner);
    v_states := mq_states(p_grace);
    SELECT * INTO t FROM mq_tickets WHERE seq = p_seq AND owner = p_owner;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM mq_locks WHERE ticket = p_seq AND session_owner = p_owner) THEN
            RETURN mq_outcome(p_seq, p_owner, v_states, v_now);
        END IF;
        RETURN jsonb_build_object('seq', p_seq, 'lost', true);
    END IF;
    IF t.cancelled THEN
        DELETE FROM mq_tickets WHERE seq = p_seq;
        PERFORM pg_notify('mq_queue', 'gone ' || p_seq);
        PERFORM mq_audit_add(t.username, 'cancel', NULL, t.target, jsonb_build_object('key', t.key));
        RETURN jsonb_build_object('seq', p_seq, 'cancelled', true);
    END IF;
    PERFORM mq_clear_dead(t.username, v_states, v_now, p_owner);
    PERFORM mq_walk(t.username, v_states, v_now);
    RETURN mq_outcome(p_seq, p_owner, v_states, v_now);
END $$;

-- A waiter's peek, after a walk granted a board to a ticket ahead of it: its grant, or the queue
-- as it stands, without the queue lock and without a walk of its own (the walk that made the
-- grant it heard of walked the whole queue). A ticket not found: a look.
CREATE OR REPLACE FUNCTION mq_peek(p_owner integer, p_seq bigint, p_grace float8) RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_now float8 := mq_now();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM mq_tickets t JOIN mq_owners o ON o.id = t.owner
                    WHERE t.seq = p_seq AND t.owner = p_owner AND NOT t.cancelled
                      AND o.backend_pid = pg_backend_pid()) THEN
        RETURN mq_look(p_owner, p_seq, p_grace);
    END IF;
    PERFORM mq_beat(p_owner);
    RETURN jsonb_build_object('seq', p_seq, 'snapshot', mq_snapshot_json(mq_states_marking(p_grace, false), v_now));
END $$;

-- Remove a lock, logged (release, or force), with the maintenance lock in its place on an
-- offline board, else a 'free BOARD' for the waiters.
CREATE OR REPLACE FUNCTION mq_remove(p_user text, p_lock mq_locks, p_key text, p_forced boolean, p_reason text,
                                     p_now float8, p_request bigint DEFAULT NULL) RETURNS void LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE m mq_offline;
BEGIN
    DELETE FROM mq_locks WHERE board = p_lock.board;
    PERFORM mq_audit_add(p_user, CASE WHEN p_forced THEN 'force' ELSE 'release' END, p_lock.board, NULL,
        jsonb_build_object('key', p_key, 'holder', p_lock.username, 'holder_key', p_lock.key,
                           'held', round((p_now - p_lock.since_ns / 1e9)::numeric, 3), 'grant', p_lock.grant_no,
                           'pool', p_lock.pool, 'reason', nullif(p_reason, ''), 'outcome', 'released')
        || CASE WHEN p_request IS NULL THEN '{{}}'::jsonb ELSE jsonb_build_object('request', p_request) END);
    SELECT * INTO m FROM mq_offline WHERE board = p_lock.board;
    IF NOT FOUND THEN  -- (its 'free' is said by the caller after its walk, if nobody got it: mq_said_free)
        RETURN;
    END IF;
    PERFORM mq_place_maintenance(p_lock.board);
    PERFORM mq_audit_add(p_user, 'maintenance-lock', p_lock.board, NULL,
        jsonb_build_object('reason', m.reason, 'offline_by', m.username, 'after', 'release'));
END $$;

-- After a walk: 'free BOARD' for a removed lock's board that no waiter got (one that went to a
-- waiter said 'grant' already: a second wake-up of every listener for the same hand-off would
-- cost each of them a round trip for nothing).
CREATE OR REPLACE FUNCTION mq_said_free(p_board text) RETURNS void LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM mq_locks WHERE board = p_board) THEN
        PERFORM pg_notify('mq_queue', 'free ' || p_board);
    END IF;
END $$;

-- A wait that ends without its board (Ctrl+C, its budget, an error): the ticket goes; a grant a
-- walk made for it meanwhile is given back (and handed on).
CREATE OR REPLACE FUNCTION mq_leave(p_owner integer, p_seq bigint, p_reason text, p_waited float8, p_grace float8)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    t mq_tickets;
    k mq_locks;
    v_states jsonb;
    v_now float8 := mq_now();
BEGIN
    PERFORM pg_advisory_xact_lock(28017, 0);
    DELETE FROM mq_tickets WHERE seq = p_seq AND owner = p_owner
        AND owner IN (SELECT id FROM mq_owners WHERE backend_pid = pg_backend_pid()) RETURNING * INTO t;
    IF FOUND THEN
        PERFORM pg_notify('mq_queue', 'gone ' || p_seq);
        IF p_reason = 'timeout' THEN
            PERFORM mq_audit_add(t.username, 'timeout', NULL, t.target,
                jsonb_build_object('key', t.key, 'waited', round(p_waited::numeric, 3)));
        END IF;
        RETURN 'left';
    END IF;
    SELECT * INTO k FROM mq_locks WHERE ticket = p_seq AND session_owner = p_owner
        AND session_owner IN (SELECT id FROM mq_owners WHERE backend_pid = pg_backend_pid());
    IF NOT FOUND THEN
        RETURN 'gone';
    END IF;
    PERFORM mq_remove(k.username, k, k.key, false, coalesce(nullif(p_reason, ''), 'interrupted'), v_now);
    v_states := mq_states(p_grace);
    PERFORM mq_walk(k.username, v_states, v_now);
    PERFORM mq_said_free(k.board);
    RETURN 'given back';
END $$;

CREATE OR REPLACE FUNCTION mq_confirm(p_owner integer, p_board text, p_grant bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    UPDATE mq_locks SET session_owner = NULL
     WHERE board = p_board AND grant_no = p_grant AND NOT session AND session_owner = p_owner
       AND p_owner IN (SELECT id FROM mq_owners WHERE backend_pid = pg_backend_pid());
    RETURN FOUND;
END $$;

CREATE OR REPLACE FUNCTION mq_fail(p_code text, p_message text, p_detail jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message, DETAIL = coalesce(p_detail, '{{}}'::jsonb)::text;
END $$;

-- sem -signal: release board p_name (p_pool: the caller's locks in pool p_name, all with p_force)
-- and hand each on. p_request: this call's id; a try whose reply a restart swallowed left its
-- release records with it in the audit log, and the next try reports those (done once).
CREATE OR REPLACE FUNCTION mq_release(p_user text, p_name text, p_boards text[], p_pool boolean, p_key text,
                                      p_force boolean, p_request bigint, p_grace float8) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_user text := mq_who(p_user);
    v_states jsonb;
    v_walk boolean;
    v_now float8 := mq_now();
    k mq_locks;
    m mq_offline;
    b text;
    v_released jsonb := '[]'::jsonb;
BEGIN
    IF p_force THEN
        PERFORM mq_need_admin('forcing (-f)');
    END IF;
    PERFORM pg_advisory_xact_lock(28017, 0);
    SELECT coalesce(jsonb_agg(jsonb_build_array(a.board, a.fields ->> 'holder', 0, a.fields ->> 'holder_key', 0,
                                                ((a.time - (a.fields ->> 'held')::float8) * 1e9)::bigint,
                                                (a.fields ->> 'grant')::bigint, coalesce(a.fields ->> 'pool', ''),
                                                false, NULL, false, NULL, '', 0, NULL, true) ORDER BY a.id), '[]'::jsonb)
      INTO v_released
      FROM mq_audit a WHERE p_request IS NOT NULL AND a.fields ? 'request' AND a.fields ->> 'request' = p_request::text
                        AND a.event IN ('release', 'force') AND a.username = v_user;  -- (index mq_audit_request)
    IF jsonb_array_length(v_released) > 0 THEN
        RETURN jsonb_build_object('released', v_released, 'done_before', true);
    END IF;
    -- Owners' states (a read of pg_locks) only for a queue to walk or a run lock: with nobody
    -- waiting and no board offline, a sem -wait lock's release is its removal alone.
    v_walk := EXISTS (SELECT 1 FROM mq_tickets) OR EXISTS (SELECT 1 FROM mq_offline);
    v_states := CASE WHEN v_walk THEN mq_states(p_grace) ELSE '{{}}'::jsonb END;
    FOREACH b IN ARRAY CASE WHEN p_pool THEN p_boards ELSE ARRAY[p_name] END LOOP
        SELECT * INTO k FROM mq_locks WHERE board = b;
        IF p_pool THEN
            CONTINUE WHEN NOT FOUND OR k.maintenance;
            CONTINUE WHEN NOT p_force AND (k.username <> v_user OR k.key <> p_key);
        ELSE
            IF NOT FOUND THEN
                PERFORM mq_fail('MQ001', format('Lock for %s is not held; nothing released', b),
                                jsonb_build_object('board', b, 'kind', 'none'));
            END IF;
            SELECT * INTO m FROM mq_offline WHERE board = b;
            IF k.maintenance AND FOUND THEN
                PERFORM mq_fail('MQ002', 'offline', jsonb_build_object('board', b, 'reason', m.reason,
                                                                       'user', m.username, 'since', m.since));
            END IF;
            IF NOT p_force AND k.username <> v_user THEN
                PERFORM mq_fail('MQ001', format('Lock for %s is held by %s, not %s; nothing released (use -f to force)',
                                                b, k.username, v_user), jsonb_build_object('board', b, 'kind', 'not-held'));
            END IF;
            IF NOT p_force AND k.key <> p_key THEN
                PERFORM mq_fail('MQ001', format('Lock for %s is held with a different key; nothing released', b),
                                jsonb_build_object('board', b, 'kind', 'wrong-key'));
            END IF;
        END IF;
        IF k.session AND NOT v_walk THEN  -- a run lock's release says whether its job lives
            v_walk := true;
            v_states := mq_states(p_grace);
        END IF;
        v_released := v_released || jsonb_build_array(mq_lock_json(k, v_states));
        PERFORM mq_remove(v_user, k, p_key, p_force, '', v_now, p_request);
    END LOOP;
    IF jsonb_array_length(v_released) = 0 THEN
        PERFORM mq_fail('MQ001', format('You hold no lock in pool %s with key ''%s''', p_name, p_key),
                        jsonb_build_object('board', p_name, 'kind', 'none'));
    END IF;
    IF v_walk THEN
        PERFORM mq_clear_dead(v_user, v_states, v_now, NULL);
        PERFORM mq_walk(v_user, v_states, v_now);
    END IF;
    PERFORM mq_said_free(r ->> 0) FROM jsonb_array_elements(v_released) AS r;
    RETURN jsonb_build_object('released', v_released);
END $$;

-- A running job's lock, released at its end if it is still the job's (else logged as gone).
CREATE OR REPLACE FUNCTION mq_end_session_lock(p_owner integer, p_user text, p_board text, p_key text,
                                               p_reason text, p_grace float8) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_user text := mq_who(p_user);
    k mq_locks;
    v_now float8 := mq_now();
BEGIN
    PERFORM pg_advisory_xact_lock(28017, 0);
    SELECT * INTO k FROM mq_locks WHERE board = p_board;
    IF NOT FOUND OR k.username <> v_user OR k.key <> p_key OR NOT k.session OR k.session_owner IS DISTINCT FROM p_owner
       OR NOT EXISTS (SELECT 1 FROM mq_owners WHERE id = p_owner AND backend_pid = pg_backend_pid()) THEN
        PERFORM mq_audit_add(v_user, 'release', p_board, NULL,
            jsonb_build_object('key', p_key, 'reason', p_reason, 'outcome', 'gone'));
        RETURN false;
    END IF;
    PERFORM mq_remove(v_user, k, p_key, false, p_reason, v_now);
    PERFORM mq_walk(v_user, mq_states(p_grace), v_now);
    PERFORM mq_said_free(k.board);
    RETURN true;
END $$;

-- Give back a grant its client could not report.
CREATE OR REPLACE FUNCTION mq_undo_grant(p_user text, p_board text, p_key text, p_grant bigint, p_reason text,
                                         p_grace float8) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_user text := mq_who(p_user);
    k mq_locks;
    v_now float8 := mq_now();
BEGIN
    PERFORM pg_advisory_xact_lock(28017, 0);
    SELECT * INTO k FROM mq_locks WHERE board = p_board;
    IF NOT FOUND OR k.grant_no IS DISTINCT FROM p_grant OR k.username <> v_user THEN
        RETURN false;
    END IF;
    PERFORM mq_remove(v_user, k, p_key, false, p_reason, v_now);
    PERFORM mq_walk(v_user, mq_states(p_grace), v_now);
    PERFORM mq_said_free(k.board);
    RETURN true;
END $$;

-- sem -cancel: the caller's waits (anyone's with p_force, an admin's) for p_name with key p_key.
CREATE OR REPLACE FUNCTION mq_cancel(p_user text, p_name text, p_key text, p_force boolean, p_grace float8)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_user text := mq_who(p_user);
    v_states jsonb;
    t mq_tickets;
    v_count integer := 0;
BEGIN
    IF p_force THEN
        PERFORM mq_need_admin('cancelling another user''s wait (-f)');
    END IF;
    PERFORM pg_advisory_xact_lock(28017, 0);
    v_states := mq_states(p_grace);
    FOR t IN SELECT * FROM mq_tickets WHERE key = p_key AND (username = v_user OR p_force)
               AND (target = p_name OR p_name = ANY (boards)) ORDER BY seq LOOP
        CONTINUE WHEN mq_state_of(v_states, t.owner) = 'dead';
        UPDATE mq_tickets SET cancelled = true WHERE seq = t.seq;
        IF t.username <> v_user THEN
            PERFORM mq_audit_add(v_user, 'force', NULL, t.target,
                jsonb_build_object('key', p_key, 'waiter', t.username, 'what', 'cancel'));
        END IF;
        PERFORM pg_notify('mq_queue', 'cancel ' || t.seq);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END $$;

-- The queue as it stands, for listings (dead tickets cleared first).
CREATE OR REPLACE FUNCTION mq_snapshot(p_user text, p_grace float8) RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_states jsonb;
    v_now float8 := mq_now();
BEGIN
    PERFORM pg_advisory_xact_lock(28017, 0);
    v_states := mq_states(p_grace);
    PERFORM mq_clear_dead(mq_who(p_user), v_states, v_now, NULL);
    RETURN mq_snapshot_json(v_states, v_now);
END $$;

-- mq offline: the board's mark (again: a new reason), its maintenance lock once nothing holds it.
CREATE OR REPLACE FUNCTION mq_offline_mark(p_user text, p_board text, p_reason text, p_grace float8)
RETURNS jsonb LANGUAGE plpgsql SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_user text := mq_who(p_user);
    v_states jsonb;
    v_now float8 := mq_now();
    v_prev mq_offline;
    v_had boolean;
    k mq_locks;
    v_since float8;
    v_locked boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(28017, 0);
    v_states := mq_states(p_grace);
    SELECT * INTO v_prev FROM mq_offline WHERE board = p_board;
    v_had := FOUND;
    v_since := CASE WHEN v_had THEN v_prev.since ELSE round(v_now::numeric, 3)::float8 END;
    INSERT INTO mq_offline (board, reason, username, since) VALUES (p_board, p_reason, v_user, v_since)
    ON CONFLICT (board) DO UPDATE SET reason = excluded.reason, username = excluded.username;
    SELECT * INTO k FROM mq_locks WHERE board = p_board;
    IF FOUND AND k.maintenance THEN
        UPDATE mq_locks SET key = 'offline: ' || p_reason, username = v_user WHERE board = p_board;
    ELSE
        PERFORM mq_settle(v_user, v_states, v_now, p_board, false);
    END IF;
    SELECT * INTO k FROM mq_locks WHERE board = p_board;
    v_locked := FOUND AND k.maintenance;
    PERFORM mq_audit_add(v_user, 'offline', p_board, NULL,
        jsonb_build_object('reason', p_reason, 'since', v_since,
                           'state', CASE WHEN v_locked THEN 'locked' ELSE 'pending' END,
                           'holder', CASE WHEN k.board IS NULL OR v_locked THEN NULL ELSE k.username END,
                           'previous_reason', CASE WHEN v_had THEN v_prev.reason END,
                           'previous_user', CASE WHEN v_had THEN v_prev.username END));
    RETURN jsonb_build_object('reason', p_reason, 'user', v_user, 'since', v_since, 'locked', v_locked);
END $$;

CREATE OR REPLACE FUNCTION mq_offline(p_user text, p_board text, p_reason text, p_grace float8) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    PERFORM mq_need_admin('mq offline');
    RETURN mq_offline_mark(p_user, p_board, p_reason, p_grace);
END $$;

CREATE OR REPLACE FUNCTION mq_online(p_user text, p_board text) RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_user text := mq_who(p_user);
    m mq_offline;
    k mq_locks;
    v_locked boolean;
BEGIN
    PERFORM mq_need_admin('mq online');
    PERFORM pg_advisory_xact_lock(28017, 0);
    SELECT * INTO m FROM mq_offline WHERE board = p_board;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO k FROM mq_locks WHERE board = p_board;
    v_locked := FOUND AND k.maintenance;
    IF v_locked THEN
        DELETE FROM mq_locks WHERE board = p_board AND maintenance;
    END IF;
    DELETE FROM mq_offline WHERE board = p_board;
    DELETE FROM mq_health WHERE board = p_board;
    PERFORM mq_audit_add(v_user, 'online', p_board, NULL,
        jsonb_build_object('reason', m.reason, 'offline_by', m.username, 'offline_since', m.since,
                           'offline_for', round((mq_now() - m.since)::numeric, 3),
                           'holder', CASE WHEN k.board IS NULL OR v_locked THEN NULL ELSE k.username END));
    PERFORM pg_notify('mq_queue', 'free ' || p_board);
    RETURN jsonb_build_object('reason', m.reason, 'user', m.username, 'since', m.since, 'locked', v_locked);
END $$;

-- A run's verdict on a board's health: its row of board failures (mq.engine.health); at the
-- limit the board goes offline with p_reason (the client words it from the row it is sent back).
CREATE OR REPLACE FUNCTION mq_health_note(p_user text, p_board text, p_limit integer, p_kind text, p_detail text,
                                          p_keep integer) RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_user text := mq_who(p_user);
    v_had integer := 0;
    v_failures jsonb := '[]'::jsonb;
    v_count integer;
BEGIN
    PERFORM pg_advisory_xact_lock(28017, 0);
    DELETE FROM mq_health WHERE board = p_board RETURNING count, failures INTO v_had, v_failures;
    v_had := coalesce(v_had, 0);
    IF p_kind IS NULL THEN
        IF v_had > 0 THEN
            PERFORM mq_audit_add(v_user, 'health', p_board, NULL,
                jsonb_build_object('outcome', 'healthy', 'ended_row', v_had));
        END IF;
        RETURN jsonb_build_object('count', 0, 'failures', '[]'::jsonb);
    END IF;
    v_failures := coalesce(v_failures, '[]'::jsonb) || jsonb_build_array(jsonb_build_array(p_kind, p_detail, mq_now()));
    SELECT coalesce(jsonb_agg(f ORDER BY n), '[]'::jsonb) INTO v_failures
      FROM jsonb_array_elements(v_failures) WITH ORDINALITY AS x(f, n)
     WHERE n > jsonb_array_length(v_failures) - p_keep;
    v_count := v_had + 1;
    INSERT INTO mq_health (board, count, failures) VALUES (p_board, v_count, v_failures);
    PERFORM mq_audit_add(v_user, 'health', p_board, NULL,
        jsonb_build_object('outcome', p_kind, 'detail', p_detail, 'count', v_count, 'limit', p_limit));
    RETURN jsonb_build_object('count', v_count, 'failures', v_failures);
END $$;

-- The board taken offline by its health row (allowed to anyone once the row reached the limit).
CREATE OR REPLACE FUNCTION mq_health_offline(p_user text, p_board text, p_limit integer, p_reason text,
                                             p_grace float8) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF p_limit < 1 OR NOT EXISTS (SELECT 1 FROM mq_health WHERE board = p_board AND count >= p_limit) THEN
        PERFORM mq_need_admin('mq offline');
    END IF;
    RETURN mq_offline_mark(p_user, p_board, p_reason, p_grace);
END $$;

CREATE OR REPLACE FUNCTION mq_events(p_since float8, p_names text[], p_limit integer)
RETURNS TABLE (id bigint, "time" float8, event text, username text, board text, target text, fields jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
    SELECT * FROM (SELECT a.id, a.time, a.event, a.username, a.board, a.target, a.fields FROM mq_audit a
                    WHERE (p_since IS NULL OR a.time >= p_since)
                      AND (p_names IS NULL OR a.board = ANY (p_names) OR a.target = ANY (p_names))
                    ORDER BY a.id DESC LIMIT p_limit) newest ORDER BY id
$$;

-- What a client learns first, in one round trip: the schema's version and the clients it serves,
-- who the server takes it for, and the stored inventory.
CREATE OR REPLACE FUNCTION mq_hello(p_user text) RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = {schema}, pg_temp AS $$
    SELECT jsonb_build_object(
        'version', (SELECT max(version) FROM mq_schema),
        'min_client', (SELECT min_client FROM mq_compat WHERE id = 1),
        'installed_by', (SELECT installed_by FROM mq_compat WHERE id = 1),
        'user', mq_who(p_user), 'admin', mq_is_admin(), 'trusted', mq_trusted(),
        'inventory', (SELECT jsonb_build_object('path', path, 'toml', toml) FROM mq_inventory WHERE id = 1),
        'hosts', (SELECT coalesce(jsonb_object_agg(name, host), '{{}}'::jsonb) FROM mq_systems))
$$;

-- Reconnected: this session holds owner p_owner's liveness lock again (the client took it); the
-- owner is re-bound to it. 'none': no such owner any more (cleared as dead); 'died': its
-- connection dropped while the server stayed up (it counts as gone: its place went); 'cleared':
-- lost past the grace period (likewise); 'kept'.
CREATE OR REPLACE FUNCTION mq_reclaim_owner(p_owner integer, p_user text, p_grace float8, p_stale boolean)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    o mq_owners;
    v_died boolean;
    v_past boolean;
    t record;
    k record;
BEGIN
    SELECT * INTO o FROM mq_owners WHERE id = p_owner;
    IF NOT FOUND THEN
        RETURN 'none';
    END IF;
    IF o.role IS DISTINCT FROM session_user::text OR o.username <> mq_who(p_user)
       OR NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = 28018
                      AND l.objid::bigint = p_owner AND l.objsubid = 2 AND l.granted AND l.pid = pg_backend_pid()) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ004', MESSAGE = format('owner %s is not this session''s', p_owner);
    END IF;
    v_died := NOT p_stale AND o.server_start IS NOT DISTINCT FROM pg_postmaster_start_time()
              AND o.incarnation IS NOT DISTINCT FROM (SELECT token FROM mq_incarnation);
    PERFORM pg_advisory_xact_lock(28017, 0);
    v_past := o.lost_at IS NOT NULL AND o.lost_at < clock_timestamp() - make_interval(secs => p_grace);
    IF v_died OR v_past THEN
        FOR t IN DELETE FROM mq_tickets WHERE owner = p_owner RETURNING seq, target, key LOOP
            PERFORM mq_audit_add(o.username, 'ticket-lost', NULL, t.target, jsonb_build_object('key', t.key));
            PERFORM pg_notify('mq_queue', 'gone ' || t.seq);
        END LOOP;
        FOR k IN DELETE FROM mq_locks WHERE session_owner = p_owner RETURNING * LOOP
            PERFORM mq_audit_add(o.username, 'release', k.board, NULL,
                jsonb_build_object('key', k.key, 'holder', o.username, 'holder_key', k.key,
                                   'held', round((mq_now() - k.since_ns / 1e9)::numeric, 3), 'grant', k.grant_no,
                                   'pool', k.pool, 'reason', 'connection lost past the grace period',
                                   'outcome', 'released'));
            PERFORM pg_notify('mq_queue', 'free ' || k.board);
        END LOOP;
    END IF;
    UPDATE mq_owners SET lost_at = NULL, backend_pid = pg_backend_pid(), server_start = pg_postmaster_start_time(),
                         incarnation = mq_incarnation_token()
     WHERE id = p_owner;
    PERFORM mq_beat(p_owner);
    RETURN CASE WHEN v_died THEN 'died' WHEN v_past THEN 'cleared' ELSE 'kept' END;
END $$;

-- The backend that holds owner p_owner's liveness lock, when the owner is the calling role's (a
-- reconnecting client ends its own stale session with it).
CREATE OR REPLACE FUNCTION mq_stale_backend(p_owner integer) RETURNS integer LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = {schema}, pg_temp AS $$
    SELECT l.pid FROM pg_locks l JOIN mq_owners o ON o.id = p_owner
     WHERE l.locktype = 'advisory' AND l.classid = 28018 AND l.objsubid = 2 AND l.granted
       AND l.objid::bigint = p_owner AND l.pid <> pg_backend_pid() AND o.role = session_user::text
     LIMIT 1
$$;

-- A session that kept the queue lock for longer than p_stuck seconds is ended, logged.
CREATE OR REPLACE FUNCTION mq_end_stuck(p_user text, p_pid integer, p_stuck float8) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    a record;
    v_ended boolean;
BEGIN
    SELECT s.pid, coalesce(s.usename::text, '?') || '@' || coalesce(host(s.client_addr), 'local') AS who,
           extract(epoch FROM coalesce(s.xact_start, s.backend_start))::float8 AS since INTO a
      FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 28017 AND l.objid = 0 AND l.objsubid = 2
       AND l.pid = p_pid;
    IF NOT FOUND OR mq_now() - a.since < p_stuck THEN
        RETURN false;
    END IF;
    BEGIN
        v_ended := pg_terminate_backend(p_pid);
    EXCEPTION WHEN OTHERS THEN
        v_ended := false;
    END;
    PERFORM mq_audit_add(mq_who(p_user), 'force', NULL, NULL,
        jsonb_build_object('reason', 'queue lock stuck', 'pid', p_pid, 'holder', a.who,
                           'held', round((mq_now() - a.since)::numeric, 3), 'ended', v_ended));
    RETURN v_ended;
END $$;

-- A running job's lock as it stands, and the audit log's last word on how the board's lock ended.
CREATE OR REPLACE FUNCTION mq_lock_of(p_board text) RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = {schema}, pg_temp AS $$
    SELECT jsonb_build_object(
        'lock', (SELECT mq_lock_json(l, '{{}}'::jsonb) FROM mq_locks l WHERE l.board = p_board),
        'last', (SELECT jsonb_build_array(a.event, a.username, a.fields ->> 'reason') FROM mq_audit a
                  WHERE a.board = p_board AND a.event IN ('release', 'force', 'reclaim') ORDER BY a.id DESC LIMIT 1))
$$;
