-- sbtc-ops' own description of the sBTC signer database as the signer's migrations leave it
-- at 0022 (releases v1.3.0 to v1.3.3: 0001, 0003-0022). Written for sbtc-ops' test databases
-- from reading stacks-sbtc/sbtc signer/migrations/; nothing here is copied from that
-- repository. Facts it reproduces: the names, types, order and nullability of the columns
-- that survive every ALTER (columns re-added by a migration sit at the end of their table),
-- the constraints and indexes, and the signatures of the four functions. The function
-- bodies are ours: they compute the same results, written differently, so this schema's
-- canonical digest is not the real one (tests record it as the live reference).

CREATE SCHEMA sbtc_signer;

-- Enumerations. (0003 also created a transaction_type enum, dropped again by 0017.)
CREATE TYPE sbtc_signer.output_type AS ENUM
    ('signers_output', 'signers_op_return', 'withdrawal', 'donation');
CREATE TYPE sbtc_signer.prevout_type AS ENUM ('signers_input', 'deposit');
CREATE TYPE sbtc_signer.dkg_shares_status AS ENUM ('unverified', 'verified', 'failed');

-- Chains ---------------------------------------------------------------------------------------

CREATE TABLE sbtc_signer.bitcoin_blocks (
    block_hash   BYTEA       NOT NULL,
    block_height BIGINT      NOT NULL,
    parent_hash  BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_canonical BOOLEAN,
    CONSTRAINT bitcoin_blocks_pkey PRIMARY KEY (block_hash)
);
CREATE INDEX ix_bitcoin_blocks_parent_hash ON sbtc_signer.bitcoin_blocks (parent_hash);
CREATE INDEX ix_bitcoin_blocks_block_height ON sbtc_signer.bitcoin_blocks (block_height);
CREATE INDEX ix_bitcoin_blocks_is_canonical ON sbtc_signer.bitcoin_blocks (is_canonical);

CREATE TABLE sbtc_signer.stacks_blocks (
    block_hash     BYTEA       NOT NULL,
    block_height   BIGINT      NOT NULL,
    parent_hash    BYTEA       NOT NULL,
    bitcoin_anchor BYTEA       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT stacks_blocks_pkey PRIMARY KEY (block_hash)
);
CREATE INDEX ix_stacks_blocks_parent_hash ON sbtc_signer.stacks_blocks (parent_hash);
CREATE INDEX ix_stacks_blocks_bitcoin_anchor ON sbtc_signer.stacks_blocks (bitcoin_anchor);

CREATE TABLE sbtc_signer.bitcoin_transactions (
    txid       BYTEA NOT NULL,
    block_hash BYTEA NOT NULL,
    CONSTRAINT bitcoin_transactions_pkey PRIMARY KEY (txid, block_hash),
    CONSTRAINT bitcoin_transactions_block_hash_fkey FOREIGN KEY (block_hash)
        REFERENCES sbtc_signer.bitcoin_blocks (block_hash) ON DELETE CASCADE
);
CREATE INDEX ix_bitcoin_transactions_block_hash ON sbtc_signer.bitcoin_transactions (block_hash);

-- Deposits and withdrawals ---------------------------------------------------------------------

CREATE TABLE sbtc_signer.deposit_requests (
    txid                   BYTEA       NOT NULL,
    output_index           INTEGER     NOT NULL,
    spend_script           BYTEA       NOT NULL,
    recipient              TEXT        NOT NULL,
    amount                 BIGINT      NOT NULL,
    lock_time              BIGINT      NOT NULL,
    signers_public_key     BYTEA       NOT NULL,  -- x-only aggregate key of the signers
    sender_script_pub_keys BYTEA[]     NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    reclaim_script_hash    BYTEA       NOT NULL,
    -- 0021 added the 8-byte big-endian column as max_fee_bytes and renamed it: PostgreSQL 18
    -- keeps the not-null constraint's name from before the rename.
    max_fee                BYTEA CONSTRAINT deposit_requests_max_fee_bytes_not_null NOT NULL,
    CONSTRAINT deposit_requests_pkey PRIMARY KEY (txid, output_index)
);

CREATE TABLE sbtc_signer.deposit_signers (
    txid           BYTEA       NOT NULL,
    output_index   INTEGER     NOT NULL,
    signer_pub_key BYTEA       NOT NULL,
    can_sign       BOOLEAN     NOT NULL,
    can_accept     BOOLEAN     NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT deposit_signers_pkey PRIMARY KEY (txid, output_index, signer_pub_key),
    CONSTRAINT deposit_signers_txid_output_index_fkey FOREIGN KEY (txid, output_index)
        REFERENCES sbtc_signer.deposit_requests (txid, output_index) ON DELETE CASCADE
);
CREATE INDEX ix_deposit_signers_signer_pub_key ON sbtc_signer.deposit_signers (signer_pub_key);

-- The foreign key to stacks_blocks was dropped by 0013: requests may arrive before their block.
CREATE TABLE sbtc_signer.withdrawal_requests (
    request_id           BIGINT      NOT NULL,
    txid                 BYTEA       NOT NULL,
    block_hash           BYTEA       NOT NULL,
    recipient            BYTEA       NOT NULL,
    amount               BIGINT      NOT NULL,
    max_fee              BIGINT      NOT NULL,
    sender_address       TEXT        NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    bitcoin_block_height BIGINT      NOT NULL,
    CONSTRAINT withdrawal_requests_pkey PRIMARY KEY (request_id, block_hash)
);

CREATE TABLE sbtc_signer.withdrawal_signers (
    request_id     BIGINT      NOT NULL,
    txid           BYTEA       NOT NULL,
    block_hash     BYTEA       NOT NULL,
    signer_pub_key BYTEA       NOT NULL,
    is_accepted    BOOLEAN     NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT withdrawal_signers_pkey PRIMARY KEY (request_id, block_hash, signer_pub_key),
    CONSTRAINT withdrawal_signers_request_id_block_hash_fkey FOREIGN KEY (request_id, block_hash)
        REFERENCES sbtc_signer.withdrawal_requests (request_id, block_hash) ON DELETE CASCADE
);

-- DKG and key rotations ------------------------------------------------------------------------

CREATE TABLE sbtc_signer.dkg_shares (
    aggregate_key                   BYTEA       NOT NULL,
    tweaked_aggregate_key           BYTEA       NOT NULL,
    encrypted_private_shares        BYTEA       NOT NULL,
    public_shares                   BYTEA       NOT NULL,
    script_pubkey                   BYTEA       NOT NULL,
    signer_set_public_keys          BYTEA[]     NOT NULL,
    signature_share_threshold       INTEGER     NOT NULL,
    created_at                      TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    dkg_shares_status               sbtc_signer.dkg_shares_status NOT NULL,
    started_at_bitcoin_block_hash   BYTEA       NOT NULL,
    started_at_bitcoin_block_height BIGINT      NOT NULL,
    CONSTRAINT dkg_shares_pkey PRIMARY KEY (aggregate_key)
);

CREATE TABLE sbtc_signer.rotate_keys_transactions (
    txid                BYTEA       NOT NULL,
    address             TEXT        NOT NULL,
    aggregate_key       BYTEA       NOT NULL,
    signer_set          BYTEA[]     NOT NULL,
    signatures_required INTEGER     NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    block_hash          BYTEA       NOT NULL,
    CONSTRAINT rotate_keys_transactions_pkey PRIMARY KEY (txid, block_hash)
);

-- Contract events (serial ids) ------------------------------------------------------------------

-- 0006 re-created sweep_block_hash (byte order fixed) at the end, without NOT NULL.
CREATE TABLE sbtc_signer.completed_deposit_events (
    id                 BIGSERIAL,
    txid               BYTEA       NOT NULL,
    block_hash         BYTEA       NOT NULL,
    amount             BIGINT      NOT NULL,
    bitcoin_txid       BYTEA       NOT NULL,
    output_index       BIGINT      NOT NULL,
    sweep_block_height BIGINT      NOT NULL,
    sweep_txid         BYTEA       NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    sweep_block_hash   BYTEA,
    CONSTRAINT completed_deposit_events_pkey PRIMARY KEY (id)
);
CREATE INDEX ix_completed_deposit_events_outpoint
    ON sbtc_signer.completed_deposit_events (bitcoin_txid, output_index);

-- Deprecated by the signer (withdrawal_requests replaced it) but still created.
CREATE TABLE sbtc_signer.withdrawal_create_events (
    id           BIGSERIAL,
    txid         BYTEA             NOT NULL,
    block_hash   BYTEA             NOT NULL,
    request_id   BIGINT            NOT NULL,
    amount       BIGINT            NOT NULL,
    sender       CHARACTER VARYING NOT NULL,
    recipient    BYTEA             NOT NULL,
    max_fee      BIGINT            NOT NULL,
    block_height BIGINT            NOT NULL,
    created_at   TIMESTAMPTZ       NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT withdrawal_create_events_pkey PRIMARY KEY (id)
);

CREATE TABLE sbtc_signer.withdrawal_accept_events (
    id                 BIGSERIAL,
    txid               BYTEA       NOT NULL,
    block_hash         BYTEA       NOT NULL,
    request_id         BIGINT      NOT NULL,
    signer_bitmap      BYTEA       NOT NULL,
    bitcoin_txid       BYTEA       NOT NULL,
    output_index       BIGINT      NOT NULL,
    fee                BIGINT      NOT NULL,
    sweep_block_height BIGINT      NOT NULL,
    sweep_txid         BYTEA       NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    sweep_block_hash   BYTEA,
    CONSTRAINT withdrawal_accept_events_pkey PRIMARY KEY (id)
);

CREATE TABLE sbtc_signer.withdrawal_reject_events (
    id            BIGSERIAL,
    txid          BYTEA       NOT NULL,
    block_hash    BYTEA       NOT NULL,
    request_id    BIGINT      NOT NULL,
    signer_bitmap BYTEA       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT withdrawal_reject_events_pkey PRIMARY KEY (id)
);

-- The signers' bitcoin transactions ------------------------------------------------------------

CREATE TABLE sbtc_signer.bitcoin_tx_outputs (
    txid          BYTEA       NOT NULL,
    output_index  INTEGER     NOT NULL,
    amount        BIGINT      NOT NULL,
    script_pubkey BYTEA       NOT NULL,
    output_type   sbtc_signer.output_type NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT bitcoin_tx_outputs_pkey PRIMARY KEY (txid, output_index)
);
-- (The index name's spelling is the signer's.)
CREATE INDEX ix_bitcoin_tx_ouputs_ouput_type ON sbtc_signer.bitcoin_tx_outputs (output_type);

CREATE TABLE sbtc_signer.bitcoin_tx_inputs (
    txid                 BYTEA       NOT NULL,
    prevout_txid         BYTEA       NOT NULL,
    prevout_output_index INTEGER     NOT NULL,
    amount               BIGINT      NOT NULL,
    script_pubkey        BYTEA       NOT NULL,
    prevout_type         sbtc_signer.prevout_type NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT bitcoin_tx_inputs_pkey PRIMARY KEY (txid, prevout_txid, prevout_output_index)
);
CREATE INDEX ix_bitcoin_tx_inputs_prevout_type ON sbtc_signer.bitcoin_tx_inputs (prevout_type);
CREATE INDEX ix_bitcoin_tx_inputs_prevout_outpoint
    ON sbtc_signer.bitcoin_tx_inputs (prevout_txid, prevout_output_index);

CREATE TABLE sbtc_signer.bitcoin_tx_sighashes (
    sighash              BYTEA       NOT NULL,
    txid                 BYTEA       NOT NULL,
    chain_tip            BYTEA       NOT NULL,
    prevout_txid         BYTEA       NOT NULL,
    prevout_output_index INTEGER     NOT NULL,
    prevout_type         sbtc_signer.prevout_type NOT NULL,
    validation_result    TEXT        NOT NULL,
    is_valid_tx          BOOLEAN     NOT NULL,
    will_sign            BOOLEAN     NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    x_only_public_key    BYTEA       NOT NULL,
    CONSTRAINT bitcoin_tx_sighashes_pkey PRIMARY KEY (sighash)
);

CREATE TABLE sbtc_signer.bitcoin_withdrawals_outputs (
    bitcoin_txid      BYTEA       NOT NULL,
    bitcoin_chain_tip BYTEA       NOT NULL,
    output_index      INTEGER     NOT NULL,
    request_id        BIGINT      NOT NULL,
    stacks_txid       BYTEA       NOT NULL,
    stacks_block_hash BYTEA       NOT NULL,
    validation_result TEXT        NOT NULL,
    is_valid_tx       BOOLEAN     NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT bitcoin_withdrawals_outputs_pkey PRIMARY KEY (bitcoin_txid, output_index)
);

CREATE TABLE sbtc_signer.bitcoin_withdrawal_tx_outputs (
    txid         BYTEA       NOT NULL,
    output_index INTEGER     NOT NULL,
    request_id   BIGINT      NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT bitcoin_withdrawal_tx_outputs_pkey PRIMARY KEY (txid, output_index),
    CONSTRAINT bitcoin_withdrawal_tx_outputs_txid_output_index_fkey FOREIGN KEY (txid, output_index)
        REFERENCES sbtc_signer.bitcoin_tx_outputs (txid, output_index)
);

-- Peers ------------------------------------------------------------------------------------------

CREATE TABLE sbtc_signer.p2p_peers (
    public_key     BYTEA       NOT NULL,
    peer_id        TEXT        NOT NULL,
    address        TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_dialed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT p2p_peers_pkey PRIMARY KEY (public_key)
);
CREATE UNIQUE INDEX uk_p2p_peers_public_key_peer_id ON sbtc_signer.p2p_peers (peer_id);

-- Functions: the signer's signatures, our bodies ---------------------------------------------

-- The bitcoin chain ending at chain_tip, newest first, at most max_depth blocks long.
CREATE FUNCTION sbtc_signer.bitcoin_blockchain_of(chain_tip BYTEA, max_depth INTEGER)
RETURNS TABLE (block_hash BYTEA, parent_hash BYTEA, block_height BIGINT)
LANGUAGE plpgsql
AS $walk$
BEGIN
    RETURN QUERY
    WITH RECURSIVE walk (hash, parent, height, n) AS (
        SELECT tip.block_hash, tip.parent_hash, tip.block_height, 1
        FROM sbtc_signer.bitcoin_blocks AS tip
        WHERE tip.block_hash = chain_tip
      UNION ALL
        SELECT up.block_hash, up.parent_hash, up.block_height, walk.n + 1
        FROM walk
        JOIN sbtc_signer.bitcoin_blocks AS up ON up.block_hash = walk.parent
        WHERE walk.n < max_depth
    )
    SELECT walk.hash, walk.parent, walk.height FROM walk;
END
$walk$;

-- The bitcoin chain ending at chain_tip down to (and including) the first block whose height
-- is not above min_block_height.
CREATE FUNCTION sbtc_signer.bitcoin_blockchain_until(chain_tip BYTEA, min_block_height BIGINT)
RETURNS TABLE (block_hash BYTEA, parent_hash BYTEA, block_height BIGINT)
LANGUAGE plpgsql
AS $walk$
BEGIN
    RETURN QUERY
    WITH RECURSIVE walk (hash, parent, height) AS (
        SELECT tip.block_hash, tip.parent_hash, tip.block_height
        FROM sbtc_signer.bitcoin_blocks AS tip
        WHERE tip.block_hash = chain_tip
      UNION ALL
        SELECT up.block_hash, up.parent_hash, up.block_height
        FROM walk
        JOIN sbtc_signer.bitcoin_blocks AS up ON up.block_hash = walk.parent
        WHERE walk.height > min_block_height
    )
    SELECT walk.hash, walk.parent, walk.height FROM walk;
END
$walk$;

-- The stacks chain ending at stacks_chain_tip, following only blocks anchored in the last
-- max_depth blocks of the bitcoin chain ending at bitcoin_chain_tip.
CREATE FUNCTION sbtc_signer.stacks_blockchain_of(
    stacks_chain_tip BYTEA, bitcoin_chain_tip BYTEA, max_depth INTEGER
)
RETURNS TABLE (block_hash BYTEA, parent_hash BYTEA, block_height BIGINT)
LANGUAGE plpgsql
AS $walk$
BEGIN
    RETURN QUERY
    WITH RECURSIVE anchors AS (
        SELECT chain.block_hash AS hash
        FROM sbtc_signer.bitcoin_blockchain_of(bitcoin_chain_tip, max_depth) AS chain
    ),
    walk (hash, parent, height) AS (
        SELECT tip.block_hash, tip.parent_hash, tip.block_height
        FROM sbtc_signer.stacks_blocks AS tip
        WHERE tip.block_hash = stacks_chain_tip
          AND tip.bitcoin_anchor IN (SELECT anchors.hash FROM anchors)
      UNION ALL
        SELECT up.block_hash, up.parent_hash, up.block_height
        FROM walk
        JOIN sbtc_signer.stacks_blocks AS up ON up.block_hash = walk.parent
        WHERE up.bitcoin_anchor IN (SELECT anchors.hash FROM anchors)
    )
    SELECT walk.hash, walk.parent, walk.height FROM walk;
END
$walk$;

-- The bytes of `input` in reverse order (0006 used it to fix the byte order of block hashes).
CREATE FUNCTION sbtc_signer.reverse_bytea(input BYTEA)
RETURNS BYTEA
LANGUAGE plpgsql
AS $rev$
DECLARE
    result BYTEA := ''::BYTEA;
BEGIN
    IF input IS NULL THEN
        RETURN NULL;
    END IF;
    FOR i IN 1 .. length(input) LOOP
        result := substring(input FROM i FOR 1) || result;
    END LOOP;
    RETURN result;
END
$rev$;

-- Applied migrations ------------------------------------------------------------------------------

CREATE TABLE public.__sbtc_migrations (
    key TEXT NOT NULL,
    CONSTRAINT __sbtc_migrations_pkey PRIMARY KEY (key)
);
