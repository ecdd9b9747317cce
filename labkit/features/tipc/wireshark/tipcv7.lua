-- TIPC v7 (encrypted TIPC) for Wireshark and tshark; shipped by labkit.
--
-- Wireshark's own TIPC dissector knows TIPC v2 only, so every frame a kernel encrypts
-- with a TIPC key (net/tipc/crypto.c, Linux 5.5+) shows as [Malformed Packet]. This
-- plugin takes over ethertype 0x88CA and UDP port 6118, dissects version-7 frames (the
-- encryption header of net/tipc/crypto.h, the ciphertext, the AES-GCM tag) and hands
-- every other frame to the built-in TIPC dissector, unchanged.
--
-- Wireshark 4.0's Lua has no AES-GCM, so the inner v2 message stays opaque here. To see
-- it, write a decrypted copy of the capture and open that:
--     labkit wireshark decrypt IN.pcap OUT.pcap --key-file KEYFILE
--
-- Install: `labkit wireshark install` (personal plugin folder), or per run:
--     tshark -X lua_script:$(labkit wireshark path) -r capture.pcap

local PLUGIN_VERSION = "1.0"

if set_plugin_info then
    set_plugin_info({
        version = PLUGIN_VERSION,
        description = "TIPC v7 (encrypted TIPC) encryption header",
        repository = "labkit (labkit/packets/wireshark/tipcv7.lua)",
    })
end

local TIPC_EVERSION = 7
local LINK_PROTOCOL = 7
local LINK_CONFIG = 13
local EHDR_SIZE = 16      -- w0, 64-bit seqno, previous node address
local EHDR_CFG_SIZE = 28  -- LINK_CONFIG: the 16-byte node identity instead of the address
local TAG_SIZE = 16
local TIPC_UDP_PORT = 6118
local ETH_P_TIPC = 0x88CA

local users = {
    [0] = "other (data, name distribution, link RESET/ACTIVATE, ...)",
    [LINK_PROTOCOL] = "LINK_PROTOCOL (STATE)",
    [LINK_CONFIG] = "LINK_CONFIG (discovery)",
}
local short_users = {
    [0] = "message", [LINK_PROTOCOL] = "LINK_STATE", [LINK_CONFIG] = "LINK_CONFIG",
}
local keys = { [0] = "master key", [1] = "key 1", [2] = "key 2", [3] = "key 3" }

local p = Proto("tipcv7", "TIPC v7 (encrypted TIPC)")
local f = p.fields
f.version = ProtoField.uint8("tipcv7.version", "Version", base.DEC, nil, 0xE0)
f.user = ProtoField.uint8("tipcv7.user", "User", base.DEC, users, 0x1E)
f.destined = ProtoField.bool("tipcv7.destined", "Destined (D)", 8,
    { "destination node known at encryption", "destination node not known" }, 0x01)
f.tx_key = ProtoField.uint8("tipcv7.tx_key", "TX key", base.DEC, keys, 0xC0)
f.rx_active = ProtoField.uint8("tipcv7.rx_active", "RX active key of the destination",
    base.DEC, nil, 0x30)
f.keepalive = ProtoField.bool("tipcv7.keepalive", "Keep-alive (K)", 8, nil, 0x08)
f.master_key = ProtoField.bool("tipcv7.master_key", "Sender has a master key (M)", 8, nil, 0x04)
f.rx_nokey = ProtoField.bool("tipcv7.rx_nokey", "Sender has no RX key for the destination (N)",
    8, nil, 0x02)
f.reserved_1 = ProtoField.uint8("tipcv7.reserved_1", "Reserved", base.DEC, nil, 0x01)
f.reserved_2 = ProtoField.uint16("tipcv7.reserved_2", "Reserved", base.HEX)
f.seqno = ProtoField.uint64("tipcv7.seqno", "Sequence number (nonce)", base.DEC)
f.prev_node = ProtoField.uint32("tipcv7.prev_node", "Previous node", base.HEX)
f.node_id = ProtoField.bytes("tipcv7.node_id", "Node identity")
f.node_id_text = ProtoField.string("tipcv7.node_id_text", "Node identity (text)")
f.node_addr = ProtoField.uint32("tipcv7.node_addr", "Node address (hash of the identity)",
    base.HEX)
f.ciphertext = ProtoField.bytes("tipcv7.ciphertext", "Encrypted TIPC v2 message")
f.ciphertext_len = ProtoField.uint32("tipcv7.ciphertext_len", "Encrypted length", base.DEC)
f.tag = ProtoField.bytes("tipcv7.tag", "Authentication tag (AES-GCM)")

local ef_short = ProtoExpert.new("tipcv7.short", "TIPC v7 message shorter than its header and tag",
    expert.group.MALFORMED, expert.severity.ERROR)
local ef_cut = ProtoExpert.new("tipcv7.cut", "Capture cut short (snapshot length)",
    expert.group.UNDECODED, expert.severity.NOTE)
p.experts = { ef_short, ef_cut }

-- The built-in TIPC dissector, as the tables held it before this plugin took over.
local builtin_eth = DissectorTable.get("ethertype"):get_dissector(ETH_P_TIPC)
local builtin_udp = DissectorTable.get("udp.port"):get_dissector(TIPC_UDP_PORT)
local builtin_any = Dissector.get("tipc")

-- The node address the kernel derives from a 16-byte identity (hash128to32 in addr.h).
local function node_addr(tvb, off)
    local w = {}
    for i = 0, 3 do w[i] = tvb(off + 4 * i, 4):uint() end
    local x = bit32.bxor(w[0], w[1], w[2], w[3])
    if x == 0 then x = bit32.bor(w[0], w[1], w[2], w[3]) end
    return x
end

-- The identity as the `tipc` tool prints it: text if it is printable, else hex.
local function node_id_text(tvb, off)
    local bytes = tvb(off, 16):bytes()
    local n = 16
    while n > 0 and bytes:get_index(n - 1) == 0 do n = n - 1 end
    if n == 0 then return nil end
    local chars = {}
    for i = 0, n - 1 do
        local c = bytes:get_index(i)
        if c < 0x20 or c > 0x7e then return nil end
        chars[#chars + 1] = string.char(c)
    end
    return table.concat(chars)
end

local function dissect_v7(tvb, pinfo, tree)
    local len = tvb:reported_length_remaining()
    local captured = tvb:len()
    pinfo.cols.protocol = "TIPCv7"
    local b0 = tvb(0, 1):uint()
    local b1 = captured >= 2 and tvb(1, 1):uint() or 0
    local user = bit32.band(bit32.rshift(b0, 1), 0x0F)
    local ehsz = (user == LINK_CONFIG) and EHDR_CFG_SIZE or EHDR_SIZE
    local t = tree:add(p, tvb(0, math.min(len, captured)))

    if len < ehsz + TAG_SIZE + 1 then
        t:add(f.version, tvb(0, 1))
        t:add(f.user, tvb(0, 1))
        t:add_proto_expert_info(ef_short, string.format(
            "%d bytes; a %s needs at least %d", len, short_users[user] or "message",
            ehsz + TAG_SIZE + 1))
        pinfo.cols.info = string.format("Encrypted TIPC, truncated (%d bytes)", len)
        return len
    end

    if captured < ehsz then
        t:add(f.version, tvb(0, 1))
        t:add(f.user, tvb(0, 1))
        t:add_proto_expert_info(ef_cut, string.format(
            "Capture cut short: %d of %d bytes captured, the encryption header is incomplete",
            captured, len))
        pinfo.cols.info = string.format("Encrypted TIPC, capture cut at %d of %d bytes",
            captured, len)
        return len
    end

    t:add(f.version, tvb(0, 1))
    t:add(f.user, tvb(0, 1))
    t:add(f.destined, tvb(0, 1))
    t:add(f.tx_key, tvb(1, 1))
    t:add(f.rx_active, tvb(1, 1))
    t:add(f.keepalive, tvb(1, 1))
    t:add(f.master_key, tvb(1, 1))
    t:add(f.rx_nokey, tvb(1, 1))
    t:add(f.reserved_1, tvb(1, 1))
    t:add(f.reserved_2, tvb(2, 2))
    t:add(f.seqno, tvb(4, 8))
    local seqno = tvb(4, 8):uint64()

    local from
    if user == LINK_CONFIG then
        local idt = t:add(f.node_id, tvb(12, 16))
        local text = node_id_text(tvb, 12)
        if text then
            idt:add(f.node_id_text, tvb(12, 16), text)
        end
        local addr = node_addr(tvb, 12)
        local item = idt:add(f.node_addr, tvb(12, 16), addr)
        item:set_generated()
        from = text or string.format("%08x", addr)
    else
        t:add(f.prev_node, tvb(12, 4))
        from = string.format("%08x", tvb(12, 4):uint())
    end

    local ctlen = len - ehsz - TAG_SIZE
    local have = math.min(ctlen, captured - ehsz)
    if have > 0 then
        t:add(f.ciphertext, tvb(ehsz, have))
    end
    t:add(f.ciphertext_len, ctlen):set_generated()
    if captured >= len then
        t:add(f.tag, tvb(len - TAG_SIZE, TAG_SIZE))
    else
        t:add_proto_expert_info(ef_cut, string.format(
            "Capture cut short: %d of %d bytes captured, the ciphertext is cut and the tag missing",
            captured, len))
    end
    t:add("[The v2 message is encrypted: `labkit wireshark decrypt IN OUT --key-file F` "
        .. "writes a copy Wireshark dissects in full]")

    local tx_key = bit32.rshift(b1, 6)
    local flags = {}
    if bit32.band(b0, 0x01) ~= 0 then flags[#flags + 1] = "D" end
    if bit32.band(b1, 0x08) ~= 0 then flags[#flags + 1] = "K" end
    if bit32.band(b1, 0x04) ~= 0 then flags[#flags + 1] = "M" end
    if bit32.band(b1, 0x02) ~= 0 then flags[#flags + 1] = "N" end
    local flagtext = #flags > 0 and (" [" .. table.concat(flags, ",") .. "]") or ""
    pinfo.cols.info = string.format("Encrypted %s from %s, seqno %s, %s, %d bytes%s",
        short_users[user] or ("user " .. user), from, tostring(seqno),
        keys[tx_key], ctlen, flagtext)
    t:append_text(string.format(", %s, seqno %s, %s", short_users[user] or ("user " .. user),
        tostring(seqno), keys[tx_key]))
    return len
end

-- Registered for both the ethertype and the UDP port: version 7 is ours, anything else
-- goes to the dissector that table held before (the built-in TIPC dissector).
function p.dissector(tvb, pinfo, tree)
    if tvb:len() >= 1 and bit32.rshift(tvb(0, 1):uint(), 5) == TIPC_EVERSION then
        return dissect_v7(tvb, pinfo, tree)
    end
    local d = builtin_eth
    if pinfo.match_uint == TIPC_UDP_PORT then d = builtin_udp end
    d = d or builtin_any
    if d then
        return d:call(tvb, pinfo, tree)
    end
    return 0
end

DissectorTable.get("ethertype"):add(ETH_P_TIPC, p)
DissectorTable.get("udp.port"):add(TIPC_UDP_PORT, p)
-- A udp bearer on another port: Analyze > Decode As... > UDP port > TIPCV7.
DissectorTable.get("udp.port"):add_for_decode_as(p)
