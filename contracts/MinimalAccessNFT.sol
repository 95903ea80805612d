// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

// A test fixture, never deployed for real: the least an access contract with the
// seed's views can be. Transfers and burns emit nothing but ERC-721's standard
// `Transfer`, and a transfer leaves the key bound (no `NodeAccessTransferred`, no
// unbinding), as a contract whose source we cannot read might behave. The gateway
// must still drop a transferred or burnt token's key from `Transfer` alone.

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

contract MinimalAccessNFT is ERC721URIStorage, Ownable {
    struct DstackNodeAccess {
        string wireguardPublicKey;
        string nodeId;
        uint256 createdAt;
        bool isActive;
    }

    event NodeAccessGranted(uint256 indexed tokenId, string nodeId, address indexed owner, string wireguardPublicKey);
    event NodeAccessRevoked(uint256 indexed tokenId, string nodeId);

    uint256 private _nextTokenId = 1;
    mapping(uint256 => DstackNodeAccess) private _access;
    mapping(bytes32 => uint256) private _tokenByNodeId;

    constructor() ERC721("Minimal Node Access", "MINIMAL") Ownable(msg.sender) {}

    function mintNodeAccess(address to, string memory nodeId, string memory wireguardPublicKey, string memory tokenURI)
        public
        onlyOwner
        returns (uint256)
    {
        uint256 tokenId = _nextTokenId++;
        _access[tokenId] = DstackNodeAccess(wireguardPublicKey, nodeId, block.timestamp, true);
        _tokenByNodeId[keccak256(bytes(nodeId))] = tokenId;
        _safeMint(to, tokenId);
        if (bytes(tokenURI).length > 0) {
            _setTokenURI(tokenId, tokenURI);
        }
        emit NodeAccessGranted(tokenId, nodeId, to, wireguardPublicKey);
        return tokenId;
    }

    function revokeNodeAccess(uint256 tokenId) public onlyOwner {
        _requireOwned(tokenId);
        _access[tokenId].isActive = false;
        emit NodeAccessRevoked(tokenId, _access[tokenId].nodeId);
    }

    /// The token's holder or the contract owner destroys it: only `Transfer(holder, 0, tokenId)` is emitted.
    function burn(uint256 tokenId) public {
        address holder = _requireOwned(tokenId);
        require(msg.sender == holder || msg.sender == owner(), "MinimalAccessNFT: caller may not burn this token");
        _burn(tokenId);
    }

    function getNodeAccess(uint256 tokenId)
        public
        view
        returns (string memory nodeId, string memory wireguardPublicKey, uint256 createdAt, bool isActive)
    {
        _requireOwned(tokenId);
        DstackNodeAccess storage access = _access[tokenId];
        return (access.nodeId, access.wireguardPublicKey, access.createdAt, access.isActive);
    }

    function hasNodeAccess(address user, string memory nodeId) public view returns (bool) {
        uint256 tokenId = _tokenByNodeId[keccak256(bytes(nodeId))];
        return tokenId != 0 && _access[tokenId].isActive && _ownerOf(tokenId) == user;
    }

    function getTokenIdByNodeId(string memory nodeId) public view returns (uint256) {
        uint256 tokenId = _tokenByNodeId[keccak256(bytes(nodeId))];
        require(tokenId != 0, "MinimalAccessNFT: unknown node id");
        return tokenId;
    }

    function verifyAccess(address user, string memory nodeId) public view returns (bool) {
        return hasNodeAccess(user, nodeId);
    }

    function getPublicKeyByTokenId(uint256 tokenId) public view returns (string memory) {
        _requireOwned(tokenId);
        return _access[tokenId].wireguardPublicKey;
    }
}
