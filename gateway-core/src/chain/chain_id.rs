//! Which chain the gateway follows (pure): where the expected chain id
//! comes from (the configuration, or the state dir's pin of the one learned
//! on first start), what an endpoint's `eth_chainId` means against it, and
//! what an empty `eth_getCode` at the contract means. A gateway pointed at
//! (or failing over to) an RPC of another chain would otherwise follow
//! whatever sits at the contract's address there: addresses repeat across
//! chains (the same deployer and nonce give the same address).

/// Where the expected chain id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainIdSource {
    /// `[chain] chain_id` in the configuration.
    Configured,
    /// The state dir's pin, learned on an earlier start.
    Pinned,
    /// Nothing yet: the first endpoint that answers sets it (then pinned).
    Unknown,
}

/// Why the expected chain id cannot be settled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainIdError {
    #[error(
        "chain.chain_id is {configured} but the state dir pins chain {pinned} (its registry follows that chain): \
         point the gateway at a fresh state_dir to follow another chain, or set chain.chain_id = {pinned}"
    )]
    PinConflict { configured: u64, pinned: u64 },
    #[error("{endpoint} serves chain {served}, not chain {expected}: refused")]
    WrongChain { endpoint: String, expected: u64, served: u64 },
    #[error(
        "no contract at {address} on chain {chain_id} (eth_getCode on {endpoint} is empty): \
         check chain.contract and that chain.rpc_urls point at the chain it was deployed on"
    )]
    NoCode { address: String, chain_id: u64, endpoint: String },
}

/// The expected chain id: the configured one, else the pinned one; both
/// present and different is an error (the registry in the state dir was
/// built from the pinned chain).
pub fn expected_chain(configured: Option<u64>, pinned: Option<u64>) -> Result<(Option<u64>, ChainIdSource), ChainIdError> {
    match (configured, pinned) {
        (Some(configured), Some(pinned)) if configured != pinned => Err(ChainIdError::PinConflict { configured, pinned }),
        (Some(configured), _) => Ok((Some(configured), ChainIdSource::Configured)),
        (None, Some(pinned)) => Ok((Some(pinned), ChainIdSource::Pinned)),
        (None, None) => Ok((None, ChainIdSource::Unknown)),
    }
}

/// What an endpoint's `eth_chainId` answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointChain {
    /// It serves the expected chain.
    Expected,
    /// Nothing was expected yet: from now on, this is the chain.
    Learned(u64),
    /// Another chain: the endpoint is refused.
    Other { expected: u64, served: u64 },
}

/// Judges `served` against `expected` and learns it when nothing was expected.
pub fn check_endpoint(expected: &mut Option<u64>, served: u64) -> EndpointChain {
    match *expected {
        Some(expected) if expected == served => EndpointChain::Expected,
        Some(expected) => EndpointChain::Other { expected, served },
        None => {
            *expected = Some(served);
            EndpointChain::Learned(served)
        }
    }
}

/// An `eth_getCode` answer: the contract is there when the code is not empty.
pub fn check_code(code: &[u8], address: &str, chain_id: u64, endpoint: &str) -> Result<(), ChainIdError> {
    if code.is_empty() {
        return Err(ChainIdError::NoCode { address: address.to_string(), chain_id, endpoint: endpoint.to_string() });
    }
    Ok(())
}

/// The state dir's pin file: the chain id in decimal and a newline.
pub fn parse_pin(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

pub fn format_pin(chain_id: u64) -> String {
    format!("{chain_id}\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_configuration_wins_and_must_agree_with_the_pin() {
        assert_eq!(expected_chain(Some(8453), None), Ok((Some(8453), ChainIdSource::Configured)));
        assert_eq!(expected_chain(Some(8453), Some(8453)), Ok((Some(8453), ChainIdSource::Configured)));
        assert_eq!(expected_chain(None, Some(31337)), Ok((Some(31337), ChainIdSource::Pinned)));
        assert_eq!(expected_chain(None, None), Ok((None, ChainIdSource::Unknown)));
        let conflict = expected_chain(Some(8453), Some(31337)).unwrap_err();
        assert!(conflict.to_string().contains("chain.chain_id is 8453 but the state dir pins chain 31337"), "{conflict}");
    }

    #[test]
    fn the_first_answer_is_learned_and_every_later_one_checked() {
        let mut expected = None;
        assert_eq!(check_endpoint(&mut expected, 31337), EndpointChain::Learned(31337));
        assert_eq!(check_endpoint(&mut expected, 31337), EndpointChain::Expected);
        assert_eq!(check_endpoint(&mut expected, 1), EndpointChain::Other { expected: 31337, served: 1 });
        assert_eq!(expected, Some(31337), "a refused endpoint does not move the expectation");
    }

    #[test]
    fn an_empty_code_names_the_address_and_the_chain() {
        assert!(check_code(&[0x60, 0x80], "0xabc", 8453, "https://base.example/…").is_ok());
        let err = check_code(&[], "0x5fbdb2315678afecb367f032d93f642f64180aa3", 8453, "https://base.example/…").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("0x5fbdb2315678afecb367f032d93f642f64180aa3") && text.contains("chain 8453"), "{text}");
    }

    #[test]
    fn pins_round_trip_and_garbage_is_no_pin() {
        assert_eq!(parse_pin(&format_pin(31337)), Some(31337));
        assert_eq!(parse_pin("  8453 \n"), Some(8453));
        assert_eq!(parse_pin("base"), None);
        assert_eq!(parse_pin(""), None);
    }
}
