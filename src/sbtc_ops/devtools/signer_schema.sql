-- The final shape of an sBTC signer database (schema sbtc_signer), written for sbtc-ops'
-- test databases from what the signer's migrations (stacks-sbtc/sbtc, signer/migrations/)
-- leave behind once all are applied: the tables dropped by later migrations
-- (transactions, stacks_transactions, sweep_*) are absent, renamed and retyped columns
-- (deposit_requests.key_set_id, max_fee BYTEA, reclaim_script_hash, bitcoin_blocks.is_canonical,
-- dkg_shares status columns, signer_key_sets) are in their final form.

CREATE SCHEMA sbtc_signer;

CREATE TYPE sbtc_signer.output_type AS ENUM (
    'signers_output', 'signers_op_return', 'withdrawal', 'donation'
);
CREATE TYPE sbtc_signer.prevout_type AS ENUM ('signers_input', 'deposit');
CREATE TYPE sbtc_signer.dkg_shares_status AS ENUM ('unverified', 'verified', 'failed');
CREATE TYPE sbtc_signer.script_version AS ENUM ('v1', 'v2');

CREATE TABLE sbtc_signer.bitcoin_blocks (
    block_hash   BYTEA PRIMARY KEY,
    block_height BIGINT NOT NULL,
    parent_hash  BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_canonical BOOLEAN
);
CREATE INDEX ix_bitcoin_blocks_parent_hash ON sbtc_signer.bitcoin_blocks (parent_hash);
CREATE INDEX ix_bitcoin_blocks_is_canonical ON sbtc_signer.bitcoin_blocks (is_canonical);

CREATE TABLE sbtc_signer.stacks_blocks (
    block_hash     BYTEA PRIMARY KEY,
    block_height   BIGINT NOT NULL,
    parent_hash    BYTEA NOT NULL,
    bitcoin_anchor BYTEA NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_stacks_blocks_parent_hash ON sbtc_signer.stacks_blocks (parent_hash);

CREATE TABLE sbtc_signer.bitcoin_transactions (
    txid       BYTEA NOT NULL,
    block_hash BYTEA NOT NULL REFERENCES sbtc_signer.bitcoin_blocks (block_hash) ON DELETE CASCADE,
    PRIMARY KEY (txid, block_hash)
);
CREATE INDEX ix_bitcoin_transactions_block_hash ON sbtc_signer.bitcoin_transactions (block_hash);

CREATE TABLE sbtc_signer.deposit_requests (
    txid                   BYTEA NOT NULL,
    output_index           INTEGER NOT NULL,
    spend_script           BYTEA NOT NULL,
    recipient              TEXT NOT NULL,
    amount                 BIGINT NOT NULL,
    lock_time              BIGINT NOT NULL,
    key_set_id             BYTEA NOT NULL,
    sender_script_pub_keys BYTEA[] NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    reclaim_script_hash    BYTEA NOT NULL,
    max_fee                BYTEA NOT NULL,
    PRIMARY KEY (txid, output_index)
);

CREATE TABLE sbtc_signer.deposit_signers (
    txid           BYTEA NOT NULL,
    output_index   INTEGER NOT NULL,
    signer_pub_key BYTEA NOT NULL,
    can_sign       BOOLEAN NOT NULL,
    can_accept     BOOLEAN NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (txid, output_index, signer_pub_key),
    FOREIGN KEY (txid, output_index)
        REFERENCES sbtc_signer.deposit_requests (txid, output_index) ON DELETE CASCADE
);
CREATE INDEX ix_deposit_signers_signer_pub_key ON sbtc_signer.deposit_signers (signer_pub_key);

CREATE TABLE sbtc_signer.withdrawal_requests (
    request_id     BIGINT NOT NULL,
    txid           BYTEA NOT NULL,
    block_hash     BYTEA NOT NULL REFERENCES sbtc_signer.stacks_blocks (block_hash) ON DELETE CASCADE,
    recipient      BYTEA NOT NULL,
    amount         BIGINT NOT NULL,
    max_fee        BIGINT NOT NULL,
    sender_address TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (request_id, block_hash)
);

CREATE TABLE sbtc_signer.withdrawal_signers (
    request_id     BIGINT NOT NULL,
    txid           BYTEA NOT NULL,
    block_hash     BYTEA NOT NULL,
    signer_pub_key BYTEA NOT NULL,
    is_accepted    BOOLEAN NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (request_id, block_hash, signer_pub_key),
    FOREIGN KEY (request_id, block_hash)
        REFERENCES sbtc_signer.withdrawal_requests (request_id, block_hash) ON DELETE CASCADE
);

CREATE TABLE sbtc_signer.dkg_shares (
    aggregate_key                   BYTEA PRIMARY KEY,
    tweaked_aggregate_key           BYTEA NOT NULL,
    encrypted_private_shares        BYTEA NOT NULL,
    public_shares                   BYTEA NOT NULL,
    script_pubkey                   BYTEA NOT NULL,
    signer_set_public_keys          BYTEA[] NOT NULL,
    signature_share_threshold       INTEGER NOT NULL,
    created_at                      TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    dkg_shares_status               sbtc_signer.dkg_shares_status,
    started_at_bitcoin_block_hash   BYTEA,
    started_at_bitcoin_block_height BIGINT
);

CREATE TABLE sbtc_signer.signer_key_sets (
    key_set_id          BYTEA PRIMARY KEY,
    script_version      sbtc_signer.script_version NOT NULL,
    script_pubkey       BYTEA NOT NULL,
    signer_public_keys  BYTEA[] NOT NULL,
    signatures_required INTEGER NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE sbtc_signer.rotate_keys_transactions (
    txid                BYTEA PRIMARY KEY,
    address             TEXT NOT NULL,
    aggregate_key       BYTEA NOT NULL,
    signer_set          BYTEA[] NOT NULL,
    signatures_required INTEGER NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    block_hash          BYTEA NOT NULL
);

CREATE TABLE sbtc_signer.completed_deposit_events (
    id                 BIGSERIAL PRIMARY KEY,
    txid               BYTEA NOT NULL,
    block_hash         BYTEA NOT NULL,
    amount             BIGINT NOT NULL,
    bitcoin_txid       BYTEA NOT NULL,
    output_index       BIGINT NOT NULL,
    sweep_block_hash   BYTEA NOT NULL,
    sweep_block_height BIGINT NOT NULL,
    sweep_txid         BYTEA NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE sbtc_signer.withdrawal_accept_events (
    id                 BIGSERIAL PRIMARY KEY,
    txid               BYTEA NOT NULL,
    block_hash         BYTEA NOT NULL,
    request_id         BIGINT NOT NULL,
    signer_bitmap      BYTEA NOT NULL,
    bitcoin_txid       BYTEA NOT NULL,
    output_index       BIGINT NOT NULL,
    fee                BIGINT NOT NULL,
    sweep_block_hash   BYTEA NOT NULL,
    sweep_block_height BIGINT NOT NULL,
    sweep_txid         BYTEA NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE sbtc_signer.withdrawal_reject_events (
    id            BIGSERIAL PRIMARY KEY,
    txid          BYTEA NOT NULL,
    block_hash    BYTEA NOT NULL,
    request_id    BIGINT NOT NULL,
    signer_bitmap BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE sbtc_signer.bitcoin_tx_outputs (
    txid          BYTEA NOT NULL,
    output_index  INTEGER NOT NULL,
    amount        BIGINT NOT NULL,
    script_pubkey BYTEA NOT NULL,
    output_type   sbtc_signer.output_type NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (txid, output_index)
);

CREATE TABLE sbtc_signer.bitcoin_tx_inputs (
    txid                 BYTEA NOT NULL,
    prevout_txid         BYTEA NOT NULL,
    prevout_output_index INTEGER NOT NULL,
    amount               BIGINT NOT NULL,
    script_pubkey        BYTEA NOT NULL,
    prevout_type         sbtc_signer.prevout_type NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (txid, prevout_txid, prevout_output_index)
);

CREATE TABLE sbtc_signer.bitcoin_tx_sighashes (
    sighash              BYTEA PRIMARY KEY,
    txid                 BYTEA NOT NULL,
    chain_tip            BYTEA NOT NULL,
    prevout_txid         BYTEA NOT NULL,
    prevout_output_index INTEGER NOT NULL,
    prevout_type         sbtc_signer.prevout_type NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    key_set_id           BYTEA NOT NULL
);

CREATE TABLE sbtc_signer.bitcoin_withdrawals_outputs (
    bitcoin_txid      BYTEA NOT NULL,
    bitcoin_chain_tip BYTEA NOT NULL,
    output_index      INTEGER NOT NULL,
    request_id        BIGINT NOT NULL,
    stacks_txid       BYTEA NOT NULL,
    stacks_block_hash BYTEA NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (bitcoin_txid, output_index)
);

CREATE TABLE sbtc_signer.p2p_peers (
    public_key     BYTEA PRIMARY KEY,
    peer_id        TEXT NOT NULL,
    address        TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_dialed_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE UNIQUE INDEX uk_p2p_peers_public_key_peer_id ON sbtc_signer.p2p_peers (peer_id);

CREATE TABLE IF NOT EXISTS public.__sbtc_migrations (
    key TEXT PRIMARY KEY
);
