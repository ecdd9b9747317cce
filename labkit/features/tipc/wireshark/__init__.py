"""TIPC captures in Wireshark: the v7 dissector plugin, its installation, and decryption.

- tipcv7.lua: the Lua dissector (encryption header of TIPC v7; v2 stays with Wireshark's
  own TIPC dissector);
- plugin: where the plugin file is, and installing it where Wireshark looks;
- tipc_crypto, frames, pcapfile, decrypt: a decrypted copy of a capture, since Wireshark
  4.0's Lua has no AES-GCM.
"""
