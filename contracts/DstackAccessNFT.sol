// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

// The reference access contract: one ERC-721 token per node, binding a node id
// to the WireGuard public key the gateway admits. Its public interface matches
// the contract deployed on Base (0x37d2106bADB01dd5bE1926e45D172Cb4203C4186)
// so the gateway follows either; it adds key rotation by the token's owner,
// validation, uniqueness, and a transfer that unbinds the key.
//
// Contract ownership changes in two steps (OpenZeppelin's Ownable2Step), as the
// seed's event name `OwnershipTransferInitiated` says: `transferContractOwnership`
// (or `transferOwnership`) only names a pending owner, who takes over by calling
// `acceptOwnership`. A mistyped address therefore never takes the contract away:
// until the new owner accepts, the old one keeps minting and revoking and can
// name someone else.

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";

contract DstackAccessNFT is ERC721URIStorage, Ownable2Step {
    struct DstackNodeAccess {
        string wireguardPublicKey;
        string nodeId;
        uint256 createdAt;
        bool isActive;
    }

    event NodeAccessGranted(uint256 indexed tokenId, string nodeId, address indexed owner, string wireguardPublicKey);
    event NodeAccessRevoked(uint256 indexed tokenId, string nodeId);
    event NodeAccessTransferred(uint256 indexed tokenId, address indexed from, address indexed to);
    event PublicKeyUpdated(address indexed owner, string wireguardPublicKey);
    /// The seed's interface: a handover to `newOwner` has begun (it completes with `acceptOwnership`,
    /// which emits Ownable's `OwnershipTransferred`).
    event OwnershipTransferInitiated(address indexed previousOwner, address indexed newOwner);

    /// A node id becomes the DNS label `<node_id>.vpn.dstack`, and a label is at most 63 octets (RFC 1035 2.3.4).
    uint256 public constant MAX_NODE_ID_LENGTH = 63;
    /// base64 of a 32-byte X25519 key: 43 significant characters and one '=' of padding.
    uint256 private constant WIREGUARD_KEY_LENGTH = 44;

    /// Token ids start at 1 so that 0 can mean "none" in the lookups below.
    uint256 private _nextTokenId = 1;
    mapping(uint256 => DstackNodeAccess) private _access;
    /// keccak256(nodeId) -> the latest token minted for it (live or revoked).
    mapping(bytes32 => uint256) private _tokenByNodeId;
    /// keccak256(key) -> the latest token that bound it; stale once that token unbinds it.
    mapping(bytes32 => uint256) private _tokenByKey;
    /// owner -> the token whose key they bound last (mint or updatePublicKey).
    mapping(address => uint256) private _keyTokenByOwner;

    constructor() ERC721("Dstack Node Access", "DSTACK") Ownable(msg.sender) {}

    // ----- administration (contract owner) -----

    function mintNodeAccess(address to, string memory nodeId, string memory wireguardPublicKey, string memory tokenURI)
        public
        onlyOwner
        returns (uint256)
    {
        _requireValidNodeId(nodeId);
        _requireValidKey(wireguardPublicKey);
        bytes32 nodeHash = keccak256(bytes(nodeId));
        require(!_access[_tokenByNodeId[nodeHash]].isActive, "DstackAccessNFT: node id already has an active token");
        _requireKeyFree(wireguardPublicKey, 0);

        uint256 tokenId = _nextTokenId++;
        _access[tokenId] = DstackNodeAccess({
            wireguardPublicKey: wireguardPublicKey,
            nodeId: nodeId,
            createdAt: block.timestamp,
            isActive: true
        });
        _tokenByNodeId[nodeHash] = tokenId;
        _tokenByKey[keccak256(bytes(wireguardPublicKey))] = tokenId;
        _keyTokenByOwner[to] = tokenId;
        _safeMint(to, tokenId);
        if (bytes(tokenURI).length > 0) {
            _setTokenURI(tokenId, tokenURI);
        }
        emit NodeAccessGranted(tokenId, nodeId, to, wireguardPublicKey);
        return tokenId;
    }

    /// Revoking keeps the token and its key readable (history for the audit log) but frees
    /// the node id and the key for a new token.
    function revokeNodeAccess(uint256 tokenId) public onlyOwner {
        _requireOwned(tokenId);
        DstackNodeAccess storage access = _access[tokenId];
        require(access.isActive, "DstackAccessNFT: token already revoked");
        access.isActive = false;
        emit NodeAccessRevoked(tokenId, access.nodeId);
    }

    /// The seed's interface for handing the contract over. Two-step: `newOwner` becomes the
    /// pending owner and must call `acceptOwnership`. The zero address is refused: there is no
    /// owner to accept, and renouncing is `renounceOwnership`, said on purpose.
    function transferContractOwnership(address newOwner) public onlyOwner {
        require(newOwner != address(0), "DstackAccessNFT: new owner is the zero address");
        transferOwnership(newOwner);
        emit OwnershipTransferInitiated(owner(), newOwner);
    }

    // ----- the token owner -----

    /// Binds a new key to the caller's token: key rotation, or the first key after a transfer.
    function updatePublicKey(uint256 tokenId, string memory wireguardPublicKey) public {
        require(_requireOwned(tokenId) == msg.sender, "DstackAccessNFT: caller does not own the token");
        DstackNodeAccess storage access = _access[tokenId];
        require(access.isActive, "DstackAccessNFT: token is revoked");
        _requireValidKey(wireguardPublicKey);
        _requireKeyFree(wireguardPublicKey, tokenId);
        access.wireguardPublicKey = wireguardPublicKey;
        _tokenByKey[keccak256(bytes(wireguardPublicKey))] = tokenId;
        _keyTokenByOwner[msg.sender] = tokenId;
        emit PublicKeyUpdated(msg.sender, wireguardPublicKey);
    }

    // ----- views (the deployed contract's interface) -----

    function getNodeAccess(uint256 tokenId)
        public
        view
        returns (string memory nodeId, string memory wireguardPublicKey, uint256 createdAt, bool isActive)
    {
        _requireOwned(tokenId);
        DstackNodeAccess storage access = _access[tokenId];
        return (access.nodeId, access.wireguardPublicKey, access.createdAt, access.isActive);
    }

    /// True if `user` owns the active token of `nodeId`, whether or not a key is bound yet.
    function hasNodeAccess(address user, string memory nodeId) public view returns (bool) {
        uint256 tokenId = _tokenByNodeId[keccak256(bytes(nodeId))];
        return tokenId != 0 && _access[tokenId].isActive && _ownerOf(tokenId) == user;
    }

    /// Reverts for a node id that never had a token; a revoked node id still names its last token.
    function getTokenIdByNodeId(string memory nodeId) public view returns (uint256) {
        uint256 tokenId = _tokenByNodeId[keccak256(bytes(nodeId))];
        require(tokenId != 0, "DstackAccessNFT: unknown node id");
        return tokenId;
    }

    /// What the gateway admits: `user` owns the active token of `nodeId` and a key is bound to it.
    function verifyAccess(address user, string memory nodeId) public view returns (bool) {
        if (!hasNodeAccess(user, nodeId)) {
            return false;
        }
        return bytes(_access[_tokenByNodeId[keccak256(bytes(nodeId))]].wireguardPublicKey).length > 0;
    }

    /// The key `owner` bound last, or "" once that token was revoked, transferred away or rebound.
    function getPublicKeyByOwner(address owner) public view returns (string memory) {
        uint256 tokenId = _keyTokenByOwner[owner];
        if (tokenId == 0 || _ownerOf(tokenId) != owner) {
            return "";
        }
        return _access[tokenId].wireguardPublicKey;
    }

    function getPublicKeyByTokenId(uint256 tokenId) public view returns (string memory) {
        _requireOwned(tokenId);
        return _access[tokenId].wireguardPublicKey;
    }

    // ----- transfer semantics -----

    /// A transfer unbinds the key: the previous holder's machine must lose access at once,
    /// and the new owner binds their own key with `updatePublicKey`.
    function _update(address to, uint256 tokenId, address auth) internal override returns (address) {
        address from = super._update(to, tokenId, auth);
        if (from != address(0) && to != address(0) && from != to) {
            _access[tokenId].wireguardPublicKey = "";
            emit NodeAccessTransferred(tokenId, from, to);
        }
        return from;
    }

    // ----- validation -----

    function _requireValidNodeId(string memory nodeId) private pure {
        bytes memory id = bytes(nodeId);
        require(id.length > 0, "DstackAccessNFT: node id is empty");
        require(id.length <= MAX_NODE_ID_LENGTH, "DstackAccessNFT: node id longer than 63 characters");
        for (uint256 i = 0; i < id.length; i++) {
            bytes1 c = id[i];
            bool allowed = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "-";
            require(allowed, "DstackAccessNFT: node id may only contain letters, digits and '-'");
        }
        require(id[0] != "-" && id[id.length - 1] != "-", "DstackAccessNFT: node id may not start or end with '-'");
    }

    /// Canonical base64 of 32 bytes: 43 alphabet characters, the last of which carries only
    /// 4 significant bits (its low 2 bits are zero), then '='.
    function _requireValidKey(string memory key) private pure {
        bytes memory k = bytes(key);
        require(
            k.length == WIREGUARD_KEY_LENGTH && k[43] == "=",
            "DstackAccessNFT: WireGuard key must be 44 characters of base64 ending in '='"
        );
        for (uint256 i = 0; i < 43; i++) {
            require(_base64Value(k[i]) < 64, "DstackAccessNFT: WireGuard key is not base64");
        }
        require(_base64Value(k[42]) & 3 == 0, "DstackAccessNFT: WireGuard key is not canonical base64 of 32 bytes");
    }

    function _requireKeyFree(string memory key, uint256 exceptTokenId) private view {
        uint256 holder = _tokenByKey[keccak256(bytes(key))];
        if (holder == 0 || holder == exceptTokenId) {
            return;
        }
        DstackNodeAccess storage access = _access[holder];
        bool stillBound = access.isActive && keccak256(bytes(access.wireguardPublicKey)) == keccak256(bytes(key));
        require(!stillBound, "DstackAccessNFT: WireGuard key already bound to an active token");
    }

    /// The value of a base64 character, or 64 for anything outside the alphabet.
    function _base64Value(bytes1 c) private pure returns (uint8) {
        if (c >= "A" && c <= "Z") return uint8(c) - 65;
        if (c >= "a" && c <= "z") return uint8(c) - 71;
        if (c >= "0" && c <= "9") return uint8(c) + 4;
        if (c == "+") return 62;
        if (c == "/") return 63;
        return 64;
    }
}
