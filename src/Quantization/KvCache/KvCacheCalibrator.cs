using System.Buffers;

using static System.FormattableString;

namespace Quantization;

/// <summary>
/// Calibrates the static scales of <see cref="KvCacheScheme.StaticPerChannel"/> or
/// <see cref="KvCacheScheme.StaticKeysPerChannel"/>: feed it the keys and values a model produces on calibration text,
/// layer by layer (prefill blocks, and decode-phase tokens one at a time as they are generated), then call
/// <see cref="CreateScheme"/>. Each (layer, KV head, channel) gets the symmetric int8 scale <c>t / 127</c> of a
/// threshold t that the options' <see cref="KvCacheCalibrationOptions.Method"/> chooses from what the channel (or, with
/// <see cref="KvCacheScaleSharing.Head"/>, its whole KV head) saw.
/// </summary>
/// <remarks>
/// <para>
/// The thresholds come from the library's observers: <see cref="MinMaxObserver"/> (the largest |x|, the default) or the
/// histogram observers <see cref="PercentileObserver"/>, <see cref="MseObserver"/> and <see cref="EntropyObserver"/>, one
/// per threshold, fed every value of its channel or head. Their statistics do not depend on how the tokens are split into
/// calls, so observing a prompt in one block or token by token gives the same scheme.
/// </para>
/// <para>
/// Choosing: on real keys, tokens unseen in calibration exceed a quiet channel's largest value, and the saturated key
/// changes the attention weights; clipping methods (percentile, MSE, entropy) make that worse, sharing a threshold per
/// KV head gives the headroom. Static per-channel values are much less accurate than values per token and KV head, at
/// one float per token and head; <see cref="KvCacheSchemeKind.StaticKeysPerChannel"/> keeps the keys static and the values
/// dynamic.
/// </para>
/// <para>
/// Memory: MinMax keeps two floats per threshold; a histogram method keeps 8 x <see cref="KvCacheCalibrationOptions.BinCount"/>
/// bytes per threshold (layers x KV heads x head dim thresholds for keys and again for static values with
/// <see cref="KvCacheScaleSharing.Channel"/>, head dim times fewer with <see cref="KvCacheScaleSharing.Head"/>).
/// Not thread-safe. A call that throws leaves the calibrator as it was.
/// </para>
/// </remarks>
public sealed class KvCacheCalibrator
{
    private readonly int _kvHeads;
    private readonly int _headDim;
    private readonly LayerThresholds[] _keys;
    private readonly LayerThresholds[] _values;
    private readonly long[] _tokens;

    /// <summary>Initializes a new instance of the <see cref="KvCacheCalibrator"/> class.</summary>
    /// <param name="layers">The decoder layers.</param>
    /// <param name="kvHeads">The key/value heads of a layer.</param>
    /// <param name="headDim">The dimension of one head.</param>
    /// <param name="options">The method, sharing and scheme; max-based per-channel <see cref="KvCacheSchemeKind.StaticPerChannel"/> when <see langword="null"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive.</exception>
    public KvCacheCalibrator(int layers, int kvHeads, int headDim, KvCacheCalibrationOptions? options = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        _kvHeads = kvHeads;
        _headDim = headDim;
        Options = options ?? new KvCacheCalibrationOptions();
        _keys = [.. Enumerable.Range(0, layers).Select(_ => new LayerThresholds(Options, Options.KeySharing, kvHeads, headDim))];
        _values = Options.Scheme == KvCacheSchemeKind.StaticPerChannel
            ? [.. Enumerable.Range(0, layers).Select(_ => new LayerThresholds(Options, Options.ValueSharing, kvHeads, headDim))]
            : [];
        _tokens = new long[layers];
    }

    /// <summary>Gets the method, sharing and scheme.</summary>
    public KvCacheCalibrationOptions Options { get; }

    /// <summary>Gets the tokens observed for a layer so far.</summary>
    /// <param name="layer">The layer.</param>
    /// <returns>The token count.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the calibrator.</exception>
    public long GetObservedTokens(int layer)
    {
        ValidateLayer(layer);
        return _tokens[layer];
    }

    /// <summary>Observes one token's keys and values of a layer, as a decoder produces them in the decode phase.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [KV heads, head dim].</param>
    /// <param name="values">The values, [KV heads, head dim].</param>
    /// <exception cref="ArgumentException">See <see cref="Observe(int, ReadOnlySpan{float}, ReadOnlySpan{float}, int)"/>.</exception>
    public void Observe(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values) => Observe(layer, keys, values, 1);

    /// <summary>
    /// Observes a block of one layer's keys and values: a prompt's prefill or decode-phase tokens (in any split; the
    /// scheme depends only on the values observed). Keys should be what the cache will store (after RoPE).
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [tokens, KV heads, head dim].</param>
    /// <param name="values">The values, [tokens, KV heads, head dim]; checked but not used by <see cref="KvCacheSchemeKind.StaticKeysPerChannel"/>.</param>
    /// <param name="tokens">The tokens in the block.</param>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the calibrator or <paramref name="tokens"/> is not positive.</exception>
    /// <exception cref="ArgumentException">The keys or values do not hold tokens x KV heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The keys or values contain NaN or an infinity.</exception>
    public void Observe(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        ValidateLayer(layer);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        long expected = (long)tokens * _kvHeads * _headDim;
        ValidateLength(keys.Length, expected, tokens, nameof(keys));
        ValidateLength(values.Length, expected, tokens, nameof(values));
        string keyName = Invariant($"keys (layer {layer})"), valueName = Invariant($"values (layer {layer})");
        QuantizationPrimitives.ThrowIfNonFinite(keys, keyName, nameof(keys));
        QuantizationPrimitives.ThrowIfNonFinite(values, valueName, nameof(values));

        // Checked: the observers below cannot throw, so a rejected call changes nothing.
        _keys[layer].Observe(keys, tokens, keyName);
        if (_values.Length > 0)
        {
            _values[layer].Observe(values, tokens, valueName);
        }

        _tokens[layer] += tokens;
    }

    /// <summary>Creates the scheme of <see cref="KvCacheCalibrationOptions.Scheme"/> from everything observed.</summary>
    /// <returns>The scheme, with scales [layers, KV heads, head dim] for keys (and values, for <see cref="KvCacheSchemeKind.StaticPerChannel"/>).</returns>
    /// <exception cref="InvalidOperationException">A layer has observed nothing.</exception>
    public KvCacheScheme CreateScheme()
    {
        int layer = Array.IndexOf(_tokens, 0L);
        if (layer >= 0)
        {
            throw new InvalidOperationException(Invariant($"Layer {layer} has observed no tokens; observe every layer's keys and values before creating the scheme."));
        }

        int width = _kvHeads * _headDim;
        float[] keyScales = new float[_keys.Length * width];
        for (int l = 0; l < _keys.Length; l++)
        {
            _keys[l].FillScales(keyScales.AsSpan(l * width, width));
        }

        if (_values.Length == 0)
        {
            return KvCacheScheme.StaticKeysPerChannel(keyScales);
        }

        float[] valueScales = new float[_values.Length * width];
        for (int l = 0; l < _values.Length; l++)
        {
            _values[l].FillScales(valueScales.AsSpan(l * width, width));
        }

        return KvCacheScheme.StaticPerChannel(keyScales, valueScales);
    }

    private void ValidateLayer(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, _keys.Length);
    }

    private void ValidateLength(int length, long expected, int tokens, string paramName)
    {
        if (length != expected)
        {
            throw new ArgumentException(Invariant($"{paramName} has {length} elements but {tokens} tokens x KV heads {_kvHeads} x head dim {_headDim} = {expected} were expected, laid out [tokens, KV heads, head dim]."), paramName);
        }
    }

    /// <summary>
    /// The thresholds of one layer's keys or values: one per group of <c>groupSize</c> adjacent channels (1 for
    /// <see cref="KvCacheScaleSharing.Channel"/>, head dim for <see cref="KvCacheScaleSharing.Head"/>).
    /// </summary>
    private sealed class LayerThresholds
    {
        private readonly int _groups;
        private readonly int _groupSize;
        private readonly MinMaxObserver? _ranges;
        private readonly HistogramObserver[] _histograms;

        public LayerThresholds(KvCacheCalibrationOptions options, KvCacheScaleSharing sharing, int kvHeads, int headDim)
        {
            _groupSize = sharing == KvCacheScaleSharing.Head ? headDim : 1;
            _groups = kvHeads * headDim / _groupSize;
            if (options.Method == CalibrationMethod.MinMax)
            {
                // One observer: a parameter per group along axis 1 of [tokens, groups, group size].
                _ranges = new MinMaxObserver(QuantizationScheme.Int8PerChannel(axis: 1));
                _histograms = [];
            }
            else
            {
                QuantizationScheme perTensor = QuantizationScheme.Int8PerTensor();
                _histograms = [.. Enumerable.Range(0, _groups).Select(_ => (HistogramObserver)options.Method.CreateObserver(perTensor, options.Percentile, options.BinCount))];
            }
        }

        /// <summary>Observes [tokens, groups x group size] checked data (finite, of the right length).</summary>
        public void Observe(ReadOnlySpan<float> data, int tokens, string name)
        {
            if (_ranges is not null)
            {
                _ranges.Observe(data, [tokens, _groups, _groupSize], name);
                return;
            }

            // Gather each group's values of every token (a column, or a head's rows), then one histogram call a group.
            int width = _groups * _groupSize, length = tokens * _groupSize;
            float[] scratch = ArrayPool<float>.Shared.Rent(length);
            try
            {
                Span<float> group = scratch.AsSpan(0, length);
                for (int g = 0; g < _groups; g++)
                {
                    for (int t = 0; t < tokens; t++)
                    {
                        data.Slice((t * width) + (g * _groupSize), _groupSize).CopyTo(group[(t * _groupSize)..]);
                    }

                    _histograms[g].Observe(group, [length], name);
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(scratch);
            }
        }

        /// <summary>Writes each channel's scale: its group's.</summary>
        public void FillScales(Span<float> scales)
        {
            ReadOnlySpan<float> groupScales = _ranges is not null
                ? _ranges.ComputeParameters().Scales
                : [.. _histograms.Select(h => h.ComputeParameters().Scales[0])];
            for (int g = 0; g < _groups; g++)
            {
                scales.Slice(g * _groupSize, _groupSize).Fill(groupScales[g]);
            }
        }
    }
}
