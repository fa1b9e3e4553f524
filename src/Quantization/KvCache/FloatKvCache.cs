using System.Numerics.Tensors;

namespace Quantization;

/// <summary>
/// A float (fp32) KV cache with the same shape, API and attention algorithm as <see cref="Int8KvCache"/>: the
/// baseline that the int8 cache is measured against, and a reference for accuracy.
/// </summary>
/// <remarks>
/// Each layer's storage ([KV heads, <see cref="KvCacheOptions.MaxTokens"/>, head dim] for keys and for values) is
/// allocated on construction; the options' scheme and block size are not used. Attention runs the same SIMD kernels as
/// the int8 cache on float data: one pass over each KV head's keys and values serves its whole query-head group.
/// </remarks>
public sealed class FloatKvCache
{
    private readonly KvCacheOptions _options;
    private readonly float[][] _keys;
    private readonly float[][] _values;
    private readonly int[] _counts;

    /// <summary>Initializes a new instance of the <see cref="FloatKvCache"/> class.</summary>
    /// <param name="options">The cache's shape.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is <see langword="null"/>.</exception>
    public FloatKvCache(KvCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        long size = (long)options.KvHeads * options.MaxTokens * options.HeadDim;
        if (size > Array.MaxLength)
        {
            throw new ArgumentException($"A layer of {size} floats per tensor is too large for one array; lower MaxTokens.", nameof(options));
        }

        _keys = new float[options.Layers][];
        _values = new float[options.Layers][];
        for (int layer = 0; layer < options.Layers; layer++)
        {
            _keys[layer] = new float[size];
            _values[layer] = new float[size];
        }

        _counts = new int[options.Layers];
    }

    /// <summary>Gets the cache's shape.</summary>
    public KvCacheOptions Options => _options;

    /// <summary>Gets the tokens every layer holds (the smallest layer count).</summary>
    public int Count => _counts.Min();

    /// <summary>Gets the bytes one token takes, all layers: float keys and values.</summary>
    public double BytesPerToken => (double)_options.Layers * _options.KvHeads * 2 * _options.HeadDim * sizeof(float);

    /// <summary>Gets the tokens a layer holds.</summary>
    /// <param name="layer">The layer.</param>
    /// <returns>The layer's token count.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache.</exception>
    public int GetCount(int layer)
    {
        KvCacheArguments.ValidateLayer(_options, layer);
        return _counts[layer];
    }

    /// <summary>Appends one token's keys and values to a layer.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [KV heads, head dim].</param>
    /// <param name="values">The values, [KV heads, head dim].</param>
    /// <exception cref="ArgumentException">See <see cref="Append(int, ReadOnlySpan{float}, ReadOnlySpan{float}, int)"/>.</exception>
    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values) => Append(layer, keys, values, 1);

    /// <summary>Appends a block of tokens' keys and values to a layer.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [tokens, KV heads, head dim].</param>
    /// <param name="values">The values, [tokens, KV heads, head dim].</param>
    /// <param name="tokens">The tokens in the block.</param>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache, <paramref name="tokens"/> is not positive, or the layer would exceed <see cref="KvCacheOptions.MaxTokens"/>.</exception>
    /// <exception cref="ArgumentException">The keys or values do not hold tokens x KV heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The keys or values contain NaN or an infinity.</exception>
    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int count = GetCount(layer);
        KvCacheArguments.ValidateAppend(_options, layer, count, keys, values, tokens);
        int dim = _options.HeadDim;
        for (int t = 0; t < tokens; t++)
        {
            for (int head = 0; head < _options.KvHeads; head++)
            {
                int source = ((t * _options.KvHeads) + head) * dim;
                long target = (((long)head * _options.MaxTokens) + count + t) * dim;
                keys.Slice(source, dim).CopyTo(_keys[layer].AsSpan((int)target, dim));
                values.Slice(source, dim).CopyTo(_values[layer].AsSpan((int)target, dim));
            }
        }

        _counts[layer] = count + tokens;
    }

    /// <summary>Forgets every token of every layer, so the cache can serve a new sequence.</summary>
    public void Clear() => Array.Clear(_counts);

    /// <summary>Computes attention for one query token on a layer: for each query head, <c>softmax(q . K / sqrt(headDim)) . V</c>.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="query">The query, [query heads, head dim].</param>
    /// <param name="output">Receives the attention output, [query heads, head dim].</param>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache.</exception>
    /// <exception cref="ArgumentException">The query or output does not hold query heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The query contains NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The layer holds no tokens.</exception>
    public void Attend(int layer, ReadOnlySpan<float> query, Span<float> output)
    {
        int count = GetCount(layer);
        KvCacheArguments.ValidateAttend(_options, layer, count, query, output, 1, 1, nameof(query));
        KvCacheAttention.Run(_options, count, 1, 1, query, output, new HeadAttention(this, layer));
    }

    /// <summary>
    /// Computes causal attention for the last <paramref name="tokens"/> tokens of a layer (a prompt's prefill, after
    /// appending their keys and values): token t of the block attends to the first <c>count - tokens + t + 1</c> tokens,
    /// with the same bits as <see cref="Attend(int, ReadOnlySpan{float}, Span{float})"/> called after each token's append.
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="queries">The queries, [tokens, query heads, head dim].</param>
    /// <param name="output">Receives the attention outputs, [tokens, query heads, head dim].</param>
    /// <param name="tokens">The query tokens: the last tokens the layer holds.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is not positive or exceeds the layer's tokens; see also <see cref="Attend(int, ReadOnlySpan{float}, Span{float})"/>.</exception>
    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int tokens) => Attend(layer, queries, output, tokens, 1);

    /// <summary>
    /// Computes causal attention for the last <paramref name="tokens"/> tokens of a layer on up to
    /// <paramref name="threads"/> threads, each taking a share of the KV heads; the result has the same bits whatever the
    /// thread count.
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="queries">The queries, [tokens, query heads, head dim].</param>
    /// <param name="output">Receives the attention outputs, [tokens, query heads, head dim].</param>
    /// <param name="tokens">The query tokens: the last tokens the layer holds (1 for a decode step).</param>
    /// <param name="threads">The most threads to use (at most the KV heads are used).</param>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache, <paramref name="tokens"/> is not positive or exceeds the layer's tokens, or <paramref name="threads"/> is not positive.</exception>
    /// <exception cref="ArgumentException">The queries or output do not hold tokens x query heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The queries contain NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The layer holds no tokens.</exception>
    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int tokens, int threads)
    {
        int count = GetCount(layer);
        KvCacheArguments.ValidateAttend(_options, layer, count, queries, output, tokens, threads, nameof(queries));
        KvCacheAttention.Run(_options, count, tokens, threads, queries, output, new HeadAttention(this, layer));
    }

    /// <summary>Copies one KV head's keys of a layer.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="kvHead">The KV head.</param>
    /// <param name="destination">Receives the keys, [<see cref="GetCount"/>, head dim].</param>
    /// <exception cref="ArgumentOutOfRangeException">The layer or head is outside the cache.</exception>
    /// <exception cref="ArgumentException">The destination does not hold the layer's tokens x head dim elements.</exception>
    public void CopyKeys(int layer, int kvHead, Span<float> destination) => Copy(_keys, layer, kvHead, destination);

    /// <summary>Copies one KV head's values of a layer.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="kvHead">The KV head.</param>
    /// <param name="destination">Receives the values, [<see cref="GetCount"/>, head dim].</param>
    /// <exception cref="ArgumentOutOfRangeException">The layer or head is outside the cache.</exception>
    /// <exception cref="ArgumentException">The destination does not hold the layer's tokens x head dim elements.</exception>
    public void CopyValues(int layer, int kvHead, Span<float> destination) => Copy(_values, layer, kvHead, destination);

    /// <summary>Attention of one KV head's query rows: their causal dots, the causal softmax, one pass over the values for all rows.</summary>
    private void AttendHead(int layer, int head, int before, int tokens, AttentionWorkspace workspace)
    {
        int dim = _options.HeadDim, rows = tokens * _options.QueryHeadsPerKvHead, count = before + tokens;
        Span<float> scores = workspace.Scores.AsSpan(0, rows * count);
        Span<float> scaled = workspace.ScaledQueries.AsSpan(0, rows * dim);
        Span<float> output = workspace.Output.AsSpan(0, rows * dim);
        long start = (long)head * _options.MaxTokens * dim;
        TensorPrimitives.Multiply(workspace.Rows.AsSpan(0, rows * dim), 1f / MathF.Sqrt(dim), scaled);
        AttentionPrimitives.CausalDots(_keys[layer].AsSpan((int)start, count * dim), 0, scaled, dim, _options.QueryHeadsPerKvHead, before, scores, count);
        AttentionPrimitives.CausalSoftmax(scores, count, _options.QueryHeadsPerKvHead, before);
        output.Clear();
        AttentionPrimitives.WeightedSum(_values[layer].AsSpan((int)start, count * dim), dim, scores, count, rows, output);
    }

    private void Copy(float[][] storage, int layer, int head, Span<float> destination)
    {
        int count = GetCount(layer);
        KvCacheArguments.ValidateHeadRows(_options, layer, head, count, destination);
        storage[layer].AsSpan(head * _options.MaxTokens * _options.HeadDim, count * _options.HeadDim).CopyTo(destination);
    }

    /// <summary>The cache as the attention driver sees it: one layer's <see cref="AttendHead"/>.</summary>
    private readonly struct HeadAttention(FloatKvCache cache, int layer) : IHeadAttention
    {
        public void AttendHead(int head, int before, int tokens, AttentionWorkspace workspace) => cache.AttendHead(layer, head, before, tokens, workspace);
    }
}
