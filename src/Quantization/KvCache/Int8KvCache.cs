using System.Buffers;

namespace Quantization;

/// <summary>
/// An int8 KV cache for one sequence of a decoder model, with attention computed on the int8 data. Append each layer's
/// keys and values per token (or a prefill block); stored tokens are never re-quantized. Memory comes from fixed-size
/// blocks of a <see cref="KvCacheBlockPool"/> (growing copies nothing); <see cref="Dispose"/> returns them.
/// </summary>
/// <remarks>
/// <para>Keys and values are laid out [tokens, KV heads, head dim] in appends; queries and outputs [query heads, head dim].
/// Query head i attends with KV head i / <see cref="KvCacheOptions.QueryHeadsPerKvHead"/> (grouped-query attention).</para>
/// <para>An append that is rejected (bad shape, the token limit, NaN or infinity, an exhausted pool) leaves the cache as it was.
/// One cache is not thread-safe; many caches may share one pool across threads.</para>
/// </remarks>
public sealed partial class Int8KvCache : IDisposable
{
    /// <summary>
    /// The int8 K/V bytes of a layer from which attention asks for each next block in software: below this the layer sits
    /// in the core's caches, and the prefetch instructions would only cost.
    /// </summary>
    private const long PrefetchBytes = 1L << 21;

    /// <summary>The largest scratch (a token's key and value rows, int8) an append keeps on the stack.</summary>
    private const int MaxStackScratchBytes = 16384;

    private static readonly QuantizationScheme PerTokenScheme = new(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerToken);

    private readonly KvCacheOptions _options;
    private readonly KvCacheBlockLease _pool; // the pool, through an account that gives its capacity back if this cache is never disposed
    private readonly List<KvCacheBlock>[] _blocks;
    private readonly int[] _quantized;
    private readonly int[] _resident;
    private readonly float[] _windowKeys;
    private readonly float[] _windowValues;
    private readonly int[] _zeroPoints; // one 0 per channel of a token: the symmetric schemes' zero points, read per lane
    private bool _disposed;

    /// <summary>Initializes a new instance of the <see cref="Int8KvCache"/> class with its own pool, large enough for <see cref="KvCacheOptions.MaxTokens"/>.</summary>
    /// <param name="options">The cache's shape and scheme.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is <see langword="null"/>.</exception>
    public Int8KvCache(KvCacheOptions options)
        : this(options, new KvCacheBlockPool(options ?? throw new ArgumentNullException(nameof(options)), BlocksFor(options)))
    {
    }

    /// <summary>Initializes a new instance of the <see cref="Int8KvCache"/> class that rents its blocks from a shared pool.</summary>
    /// <param name="options">The cache's shape and scheme.</param>
    /// <param name="pool">The pool; its blocks must fit the options (same KV heads, head dim, block tokens and scheme kind).</param>
    /// <exception cref="ArgumentNullException">An argument is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The pool's blocks do not fit the options.</exception>
    public Int8KvCache(KvCacheOptions options, KvCacheBlockPool pool)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(pool);
        KvCacheBlockLayout layout = KvCacheBlockLayout.From(options);
        if (pool.Layout != layout)
        {
            throw new ArgumentException($"The pool's blocks ({pool.Layout}) do not fit this cache's options ({layout}); create the pool from options with the same KV heads, head dim, block tokens and scheme.", nameof(pool));
        }

        _options = options;
        _pool = new KvCacheBlockLease(pool);
        _blocks = new List<KvCacheBlock>[options.Layers];
        for (int layer = 0; layer < options.Layers; layer++)
        {
            _blocks[layer] = [];
        }

        _quantized = new int[options.Layers];
        _resident = new int[options.Layers];
        int window = options.Scheme.Kind == KvCacheSchemeKind.Kivi ? options.Layers * options.Scheme.ResidentTokens * options.TokenWidth : 0;
        _windowKeys = ArrayPool<float>.Shared.Rent(window);
        _windowValues = ArrayPool<float>.Shared.Rent(window);
        _zeroPoints = new int[options.TokenWidth];
    }

    /// <summary>Gets the cache's shape and scheme.</summary>
    public KvCacheOptions Options => _options;

    /// <summary>Gets the tokens every layer holds (the smallest layer count; between decode steps all layers agree).</summary>
    public int Count
    {
        get
        {
            int count = int.MaxValue;
            for (int layer = 0; layer < _options.Layers; layer++)
            {
                count = Math.Min(count, _quantized[layer] + _resident[layer]);
            }

            return count;
        }
    }

    /// <summary>
    /// Gets the bytes one token takes in the quantized history, all layers: int8 keys and values plus their scales
    /// (a KIVI key channel scale is shared by a group of tokens). The KIVI float window and the static scales are fixed
    /// costs, not counted here.
    /// </summary>
    public double BytesPerToken
    {
        get
        {
            KvCacheScheme scheme = _options.Scheme;
            double scaleBytes = scheme.Kind switch
            {
                KvCacheSchemeKind.DynamicPerTokenHead => 2 * sizeof(float),
                KvCacheSchemeKind.StaticKeysPerChannel => sizeof(float),
                KvCacheSchemeKind.Kivi => sizeof(float) * (1 + ((double)_options.HeadDim / scheme.GroupSize)),
                _ => 0,
            };
            return (double)_options.Layers * _options.KvHeads * ((2.0 * _options.HeadDim) + scaleBytes);
        }
    }

    /// <summary>Gets the tokens a layer holds (quantized plus, for KIVI, those still in the float window).</summary>
    /// <param name="layer">The layer.</param>
    /// <returns>The layer's token count.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache.</exception>
    public int GetCount(int layer)
    {
        KvCacheArguments.ValidateLayer(_options, layer);
        return _quantized[layer] + _resident[layer];
    }

    /// <summary>Appends one token's keys and values to a layer.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [KV heads, head dim].</param>
    /// <param name="values">The values, [KV heads, head dim].</param>
    /// <exception cref="ArgumentException">See <see cref="Append(int, ReadOnlySpan{float}, ReadOnlySpan{float}, int)"/>.</exception>
    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values) => Append(layer, keys, values, 1);

    /// <summary>Appends a block of tokens' keys and values to a layer (a prompt's prefill, or one decode step).</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [tokens, KV heads, head dim].</param>
    /// <param name="values">The values, [tokens, KV heads, head dim].</param>
    /// <param name="tokens">The tokens in the block.</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache, <paramref name="tokens"/> is not positive, or the layer would exceed <see cref="KvCacheOptions.MaxTokens"/>.</exception>
    /// <exception cref="ArgumentException">The keys or values do not hold tokens x KV heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The keys or values contain NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The pool has no free block for the new tokens.</exception>
    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        KvCacheArguments.ValidateAppend(_options, layer, GetCount(layer), keys, values, tokens);
        if (_options.Scheme.Kind == KvCacheSchemeKind.Kivi)
        {
            AppendToWindow(layer, keys, values, tokens);
        }
        else
        {
            AppendQuantized(layer, keys, values, tokens);
        }
    }

    /// <summary>
    /// Computes attention for one query token on a layer's int8 data: for each query head,
    /// <c>softmax(q . K / sqrt(headDim)) . V</c> over every token the layer holds.
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="query">The query, [query heads, head dim].</param>
    /// <param name="output">Receives the attention output, [query heads, head dim].</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache.</exception>
    /// <exception cref="ArgumentException">The query or output does not hold query heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The query contains NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The layer holds no tokens.</exception>
    /// <remarks>
    /// Each query head is quantized to int16 (scale max |q| / 32767, with static or KIVI key channel scales folded in
    /// first), so the key dots are exact int32 sums of int8 x int16; per-token key scales multiply the dots. The softmax
    /// subtracts the maximum score. Value scales are folded into the softmax weights (per token) or applied to the output
    /// (static per channel). Every query head of a group shares one pass over its KV head's keys and values.
    /// </remarks>
    public void Attend(int layer, ReadOnlySpan<float> query, Span<float> output)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = GetCount(layer);
        KvCacheArguments.ValidateAttend(_options, layer, count, query, output, 1, 1, nameof(query));
        KvCacheAttention.Run(_options, count, 1, 1, query, output, new HeadAttention(this, layer));
    }

    /// <summary>
    /// Computes causal attention for the last <paramref name="tokens"/> tokens of a layer (a prompt's prefill, after
    /// appending their keys and values): token t of the block attends to the first <c>count - tokens + t + 1</c> tokens.
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="queries">The queries, [tokens, query heads, head dim].</param>
    /// <param name="output">Receives the attention outputs, [tokens, query heads, head dim].</param>
    /// <param name="tokens">The query tokens: the last tokens the layer holds.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is not positive or exceeds the layer's tokens; see also <see cref="Attend(int, ReadOnlySpan{float}, Span{float})"/>.</exception>
    /// <remarks>
    /// Every query row of a block of tokens shares one pass over each KV head's int8 keys and values. For the dynamic and
    /// static schemes the result has the same bits as <see cref="Attend(int, ReadOnlySpan{float}, Span{float})"/> called
    /// after each token's append; KIVI tokens that the window has flushed since are attended on their int8 form.
    /// </remarks>
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
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache, <paramref name="tokens"/> is not positive or exceeds the layer's tokens, or <paramref name="threads"/> is not positive.</exception>
    /// <exception cref="ArgumentException">The queries or output do not hold tokens x query heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The queries contain NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The layer holds no tokens.</exception>
    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int tokens, int threads)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = GetCount(layer);
        KvCacheArguments.ValidateAttend(_options, layer, count, queries, output, tokens, threads, nameof(queries));
        KvCacheAttention.Run(_options, count, tokens, threads, queries, output, new HeadAttention(this, layer));
    }

    /// <summary>Dequantizes one KV head's keys of a layer, for callers that bring their own attention kernel.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="kvHead">The KV head.</param>
    /// <param name="destination">Receives the keys, [<see cref="GetCount"/>, head dim]: <c>q * scale</c> (the KIVI window's tokens as stored, in float).</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer or head is outside the cache.</exception>
    /// <exception cref="ArgumentException">The destination does not hold the layer's tokens x head dim elements.</exception>
    public void DequantizeKeys(int layer, int kvHead, Span<float> destination) => Dequantize(layer, kvHead, destination, keys: true);

    /// <summary>Dequantizes one KV head's values of a layer, for callers that bring their own attention kernel.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="kvHead">The KV head.</param>
    /// <param name="destination">Receives the values, [<see cref="GetCount"/>, head dim].</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer or head is outside the cache.</exception>
    /// <exception cref="ArgumentException">The destination does not hold the layer's tokens x head dim elements.</exception>
    public void DequantizeValues(int layer, int kvHead, Span<float> destination) => Dequantize(layer, kvHead, destination, keys: false);

    /// <summary>Forgets every token of every layer and returns the blocks to the pool, so the cache can serve a new sequence.</summary>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    public void Clear()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ReturnBlocks();
    }

    /// <summary>Returns the cache's blocks to the pool; the cache cannot be used afterwards.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        ReturnBlocks();
        _pool.Dispose();
        ArrayPool<float>.Shared.Return(_windowKeys);
        ArrayPool<float>.Shared.Return(_windowValues);
    }

    private void ReturnBlocks()
    {
        foreach (List<KvCacheBlock> blocks in _blocks)
        {
            _pool.Return(blocks);
            blocks.Clear();
        }

        Array.Clear(_quantized);
        Array.Clear(_resident);
    }

    private static int BlocksFor(KvCacheOptions options) =>
        options.Layers * ((options.MaxTokens + options.BlockTokens - 1) / options.BlockTokens);
}
