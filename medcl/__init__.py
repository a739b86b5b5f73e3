"""medcl."""
