namespace Quantization;

/// <summary>How an <see cref="Int8KvCache"/> chooses the scales of the keys and values it stores.</summary>
public enum KvCacheSchemeKind
{
    /// <summary>Static per-channel scales for keys and values over (KV heads x head dim), calibrated ahead of time.</summary>
    StaticPerChannel,

    /// <summary>Dynamic symmetric scales per token and KV head for keys and values; no calibration.</summary>
    DynamicPerTokenHead,

    /// <summary>
    /// KIVI-style: keys per channel in groups of tokens, values per token and KV head, the most recent tokens kept in
    /// float until a window fills.
    /// </summary>
    Kivi,

    /// <summary>
    /// Static per-channel scales for keys over (KV heads x head dim), calibrated ahead of time; values dynamic per token
    /// and KV head, as <see cref="DynamicPerTokenHead"/>.
    /// </summary>
    StaticKeysPerChannel,
}
