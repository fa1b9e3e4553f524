namespace Quantization;

/// <summary>
/// Calibrates the scales of <see cref="KvCacheScheme.StaticPerChannel"/>: feed it the keys and values a model produces
/// on calibration text, layer by layer, then call <see cref="CreateScheme"/>. Each (layer, KV head, channel) gets the
/// symmetric int8 scale <c>max |x| / 127</c> of what it saw (a per-channel <see cref="MinMaxObserver"/>).
/// </summary>
public sealed class KvCacheCalibrator
{
    private readonly int _kvHeads;
    private readonly int _headDim;
    private readonly MinMaxObserver[] _keys;
    private readonly MinMaxObserver[] _values;

    /// <summary>Initializes a new instance of the <see cref="KvCacheCalibrator"/> class.</summary>
    /// <param name="layers">The decoder layers.</param>
    /// <param name="kvHeads">The key/value heads of a layer.</param>
    /// <param name="headDim">The dimension of one head.</param>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive.</exception>
    public KvCacheCalibrator(int layers, int kvHeads, int headDim)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        _kvHeads = kvHeads;
        _headDim = headDim;
        QuantizationScheme perChannel = QuantizationScheme.Int8PerChannel(axis: 1);
        _keys = [.. Enumerable.Range(0, layers).Select(_ => new MinMaxObserver(perChannel))];
        _values = [.. Enumerable.Range(0, layers).Select(_ => new MinMaxObserver(perChannel))];
    }

    /// <summary>Observes a block of one layer's keys and values.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [tokens, KV heads, head dim].</param>
    /// <param name="values">The values, [tokens, KV heads, head dim].</param>
    /// <param name="tokens">The tokens in the block.</param>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the calibrator or <paramref name="tokens"/> is not positive.</exception>
    /// <exception cref="ArgumentException">The keys or values do not hold tokens x KV heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The keys or values contain NaN or an infinity.</exception>
    public void Observe(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, _keys.Length);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        int[] shape = [tokens, _kvHeads * _headDim];
        _keys[layer].Observe(keys, shape, FormattableString.Invariant($"keys (layer {layer})"));
        _values[layer].Observe(values, shape, FormattableString.Invariant($"values (layer {layer})"));
    }

    /// <summary>Creates the static scheme from everything observed.</summary>
    /// <returns>The scheme, with scales [layers, KV heads, head dim] for keys and values.</returns>
    /// <exception cref="InvalidOperationException">A layer has observed nothing.</exception>
    public KvCacheScheme CreateScheme()
    {
        float[] keyScales = [.. _keys.SelectMany(o => o.ComputeParameters().Scales.ToArray())];
        float[] valueScales = [.. _values.SelectMany(o => o.ComputeParameters().Scales.ToArray())];
        return KvCacheScheme.StaticPerChannel(keyScales, valueScales);
    }
}
