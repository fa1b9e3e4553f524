using System.Buffers;
using System.Numerics.Tensors;

using static System.FormattableString;

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
public sealed class Int8KvCache : IDisposable
{
    private static readonly QuantizationScheme PerTokenScheme = new(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerToken);

    private readonly KvCacheOptions _options;
    private readonly KvCacheBlockPool _pool;
    private readonly List<KvCacheBlock>[] _blocks;
    private readonly int[] _quantized;
    private readonly int[] _resident;
    private readonly float[] _windowKeys;
    private readonly float[] _windowValues;
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
        _pool = pool;
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
        KvCacheArguments.ValidateAttend(_options, layer, count, query, output);
        int group = _options.QueryHeadsPerKvHead, dim = _options.HeadDim;
        float[] scores = ArrayPool<float>.Shared.Rent(group * count);
        float[] floatQueries = ArrayPool<float>.Shared.Rent(group * dim);
        short[] queries = ArrayPool<short>.Shared.Rent(group * dim);
        int[] dots = ArrayPool<int>.Shared.Rent(group * _options.BlockTokens);
        try
        {
            AttentionScratch scratch = new(scores.AsSpan(0, group * count), floatQueries.AsSpan(0, group * dim), queries.AsSpan(0, group * dim), dots);
            for (int head = 0; head < _options.KvHeads; head++)
            {
                int first = head * group * dim;
                AttendHead(layer, head, count, query.Slice(first, group * dim), output.Slice(first, group * dim), scratch);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scores);
            ArrayPool<float>.Shared.Return(floatQueries);
            ArrayPool<short>.Shared.Return(queries);
            ArrayPool<int>.Shared.Return(dots);
        }
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

    /// <summary>Static or dynamic: quantizes the block into scratch, rents the blocks it needs, then stores it.</summary>
    private void AppendQuantized(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int width = _options.TokenWidth, rows = tokens * _options.KvHeads;
        sbyte[] quantizedKeys = ArrayPool<sbyte>.Shared.Rent(tokens * width);
        sbyte[] quantizedValues = ArrayPool<sbyte>.Shared.Rent(tokens * width);
        float[] scales = ArrayPool<float>.Shared.Rent(2 * rows);
        sbyte[] zeroPoints = ArrayPool<sbyte>.Shared.Rent(rows);
        try
        {
            Span<sbyte> qk = quantizedKeys.AsSpan(0, tokens * width), qv = quantizedValues.AsSpan(0, tokens * width);
            Span<float> keyScales = scales.AsSpan(0, rows), valueScales = scales.AsSpan(rows, rows);
            int[] rowShape = [rows, _options.HeadDim], channelShape = [tokens, width];
            if (_options.Scheme.HasStaticKeys)
            {
                QuantizationPrimitives.Quantize(keys, channelShape, QuantizationGranularity.PerChannel(1), _options.Scheme.KeyScales.Slice(layer * width, width), [], qk, tensorName: Invariant($"keys (layer {layer})"));
            }
            else
            {
                QuantizationPrimitives.QuantizeDynamic(keys, rowShape, PerTokenScheme, qk, keyScales, zeroPoints.AsSpan(0, rows), Invariant($"keys (layer {layer})"));
            }

            if (_options.Scheme.HasStaticValues)
            {
                QuantizationPrimitives.Quantize(values, channelShape, QuantizationGranularity.PerChannel(1), _options.Scheme.ValueScales.Slice(layer * width, width), [], qv, tensorName: Invariant($"values (layer {layer})"));
            }
            else
            {
                QuantizationPrimitives.QuantizeDynamic(values, rowShape, PerTokenScheme, qv, valueScales, zeroPoints.AsSpan(0, rows), Invariant($"values (layer {layer})"));
            }

            int start = _quantized[layer];
            Grow(layer, start + tokens);
            for (int t = 0; t < tokens; t++)
            {
                for (int head = 0; head < _options.KvHeads; head++)
                {
                    int row = (t * _options.KvHeads) + head;
                    StoreRow(layer, start + t, head, qk.Slice(row * _options.HeadDim, _options.HeadDim), qv.Slice(row * _options.HeadDim, _options.HeadDim), _options.Scheme.HasStaticKeys ? 0f : keyScales[row], _options.Scheme.HasStaticValues ? 0f : valueScales[row]);
                }
            }

            _quantized[layer] = start + tokens;
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(quantizedKeys);
            ArrayPool<sbyte>.Shared.Return(quantizedValues);
            ArrayPool<float>.Shared.Return(scales);
            ArrayPool<sbyte>.Shared.Return(zeroPoints);
        }
    }

    /// <summary>KIVI: copies tokens into the float window, quantizing the window each time it fills.</summary>
    private void AppendToWindow(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int window = _options.Scheme.ResidentTokens, dim = _options.HeadDim;
        int flushes = (_resident[layer] + tokens) / window;
        Grow(layer, _quantized[layer] + (flushes * window));
        for (int t = 0; t < tokens; t++)
        {
            int slot = _resident[layer];
            for (int head = 0; head < _options.KvHeads; head++)
            {
                int source = ((t * _options.KvHeads) + head) * dim;
                int target = WindowOffset(layer, head, slot);
                keys.Slice(source, dim).CopyTo(_windowKeys.AsSpan(target, dim));
                values.Slice(source, dim).CopyTo(_windowValues.AsSpan(target, dim));
            }

            _resident[layer] = slot + 1;
            if (slot + 1 == window)
            {
                FlushWindow(layer);
            }
        }
    }

    /// <summary>
    /// KIVI: quantizes the full window at once, keys per channel in groups of G tokens ([KV heads, R, head dim] with
    /// groups along the token axis), values per token and head, stores it in the blocks <see cref="Grow"/> rented and empties the window.
    /// </summary>
    private void FlushWindow(int layer)
    {
        KvCacheScheme scheme = _options.Scheme;
        int window = scheme.ResidentTokens, dim = _options.HeadDim, heads = _options.KvHeads;
        int size = heads * window * dim, rows = heads * window, groups = window / scheme.GroupSize;
        sbyte[] quantizedKeys = ArrayPool<sbyte>.Shared.Rent(size);
        sbyte[] quantizedValues = ArrayPool<sbyte>.Shared.Rent(size);
        float[] keyScales = ArrayPool<float>.Shared.Rent(groups * heads * dim);
        float[] valueScales = ArrayPool<float>.Shared.Rent(rows);
        sbyte[] zeroPoints = ArrayPool<sbyte>.Shared.Rent(Math.Max(rows, groups * heads * dim));
        try
        {
            ReadOnlySpan<float> windowKeys = _windowKeys.AsSpan(WindowOffset(layer, 0, 0), size);
            ReadOnlySpan<float> windowValues = _windowValues.AsSpan(WindowOffset(layer, 0, 0), size);
            QuantizationScheme keyScheme = PerTokenScheme.WithGranularity(QuantizationGranularity.PerGroup(scheme.GroupSize, axis: 1));
            QuantizationPrimitives.QuantizeDynamic(windowKeys, [heads, window, dim], keyScheme, quantizedKeys.AsSpan(0, size), keyScales.AsSpan(0, groups * heads * dim), zeroPoints.AsSpan(0, groups * heads * dim));
            QuantizationPrimitives.QuantizeDynamic(windowValues, [rows, dim], PerTokenScheme, quantizedValues.AsSpan(0, size), valueScales.AsSpan(0, rows), zeroPoints.AsSpan(0, rows));

            int start = _quantized[layer];
            for (int head = 0; head < heads; head++)
            {
                for (int t = 0; t < window; t++)
                {
                    int row = (head * window) + t;
                    StoreRow(layer, start + t, head, quantizedKeys.AsSpan(row * dim, dim), quantizedValues.AsSpan(row * dim, dim), 0f, valueScales[row]);
                }

                for (int g = 0; g < groups; g++)
                {
                    int token = start + (g * scheme.GroupSize);
                    KvCacheBlock block = _blocks[layer][token / _options.BlockTokens];
                    int slot = (token % _options.BlockTokens) / scheme.GroupSize;
                    keyScales.AsSpan(((head * groups) + g) * dim, dim).CopyTo(block.KeyScales.AsSpan(KeyGroupOffset(head, slot), dim));
                }
            }

            _quantized[layer] = start + window;
            _resident[layer] = 0;
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(quantizedKeys);
            ArrayPool<sbyte>.Shared.Return(quantizedValues);
            ArrayPool<float>.Shared.Return(keyScales);
            ArrayPool<float>.Shared.Return(valueScales);
            ArrayPool<sbyte>.Shared.Return(zeroPoints);
        }
    }

    /// <summary>Rents, all at once or not at all, the blocks a layer needs to hold <paramref name="quantizedTokens"/> quantized tokens.</summary>
    private void Grow(int layer, int quantizedTokens)
    {
        int needed = ((quantizedTokens + _options.BlockTokens - 1) / _options.BlockTokens) - _blocks[layer].Count;
        if (needed > 0)
        {
            _blocks[layer].AddRange(_pool.Rent(needed));
        }
    }

    /// <summary>Stores one quantized (token, head) row and its per-token scales (ignored by schemes without them).</summary>
    private void StoreRow(int layer, int token, int head, ReadOnlySpan<sbyte> keys, ReadOnlySpan<sbyte> values, float keyScale, float valueScale)
    {
        int tokensPerBlock = _options.BlockTokens, slot = token % tokensPerBlock;
        KvCacheBlock block = _blocks[layer][token / tokensPerBlock];
        int offset = ((head * tokensPerBlock) + slot) * _options.HeadDim;
        keys.CopyTo(block.Keys.AsSpan(offset));
        values.CopyTo(block.Values.AsSpan(offset));
        if (_options.Scheme.Kind == KvCacheSchemeKind.DynamicPerTokenHead)
        {
            block.KeyScales[(head * tokensPerBlock) + slot] = keyScale;
        }

        if (!_options.Scheme.HasStaticValues)
        {
            block.ValueScales[(head * tokensPerBlock) + slot] = valueScale;
        }
    }

    private int WindowOffset(int layer, int head, int slot) =>
        (((layer * _options.KvHeads) + head) * _options.Scheme.ResidentTokens + slot) * _options.HeadDim;

    private int KeyGroupOffset(int head, int groupSlot) =>
        ((head * (_options.BlockTokens / _options.Scheme.GroupSize)) + groupSlot) * _options.HeadDim;

    /// <summary>Attention of one KV head's group of query heads: scores, softmax, weighted values.</summary>
    private void AttendHead(int layer, int head, int count, ReadOnlySpan<float> query, Span<float> output, in AttentionScratch scratch)
    {
        KvCacheScheme scheme = _options.Scheme;
        int group = _options.QueryHeadsPerKvHead, dim = _options.HeadDim, tokensPerBlock = _options.BlockTokens;
        int quantized = _quantized[layer];
        float inverseSqrtDim = 1f / MathF.Sqrt(dim);
        Span<float> scores = scratch.Scores;
        Span<float> factors = stackalloc float[group];
        ReadOnlySpan<float> channelScales = scheme.HasStaticKeys
            ? scheme.KeyScales.Slice(((layer * _options.KvHeads) + head) * dim, dim)
            : [];
        if (scheme.Kind != KvCacheSchemeKind.Kivi)
        {
            PrepareQueries(query, channelScales, inverseSqrtDim, scratch, factors);
        }

        for (int first = 0, b = 0; first < quantized; first += tokensPerBlock, b++)
        {
            KvCacheBlock block = _blocks[layer][b];
            int tokens = Math.Min(tokensPerBlock, quantized - first);
            ReadOnlySpan<sbyte> keys = block.Keys.AsSpan(head * tokensPerBlock * dim, tokens * dim);
            PrefetchNext(layer, head, b, keys: true);
            if (scheme.Kind == KvCacheSchemeKind.Kivi)
            {
                int groupSize = scheme.GroupSize;
                for (int g = 0; g * groupSize < tokens; g++)
                {
                    PrepareQueries(query, block.KeyScales.AsSpan(KeyGroupOffset(head, g), dim), inverseSqrtDim, scratch, factors);
                    AttentionPrimitives.Dots(keys.Slice(g * groupSize * dim, groupSize * dim), scratch.Queries, dim, scratch.Dots, groupSize);
                    ScaleDots(scratch.Dots, groupSize, factors, [], scores, count, first + (g * groupSize));
                }
            }
            else
            {
                AttentionPrimitives.Dots(keys, scratch.Queries, dim, scratch.Dots, tokens);
                ReadOnlySpan<float> tokenScales = scheme.Kind == KvCacheSchemeKind.DynamicPerTokenHead ? block.KeyScales.AsSpan(head * tokensPerBlock, tokens) : [];
                ScaleDots(scratch.Dots, tokens, factors, tokenScales, scores, count, first);
            }
        }

        int resident = count - quantized;
        ReadOnlySpan<float> windowKeys = resident > 0 ? _windowKeys.AsSpan(WindowOffset(layer, head, 0), resident * dim) : [];
        if (resident > 0)
        {
            TensorPrimitives.Multiply(query, inverseSqrtDim, scratch.FloatQueries);
            AttentionPrimitives.Dots(windowKeys, scratch.FloatQueries, dim, scores[quantized..], count);
        }

        for (int j = 0; j < group; j++)
        {
            AttentionPrimitives.Softmax(scores.Slice(j * count, count));
        }

        output.Clear();
        for (int first = 0, b = 0; first < quantized; first += tokensPerBlock, b++)
        {
            KvCacheBlock block = _blocks[layer][b];
            int tokens = Math.Min(tokensPerBlock, quantized - first);
            PrefetchNext(layer, head, b, keys: false);
            if (!scheme.HasStaticValues)
            {
                ReadOnlySpan<float> valueScales = block.ValueScales.AsSpan(head * tokensPerBlock, tokens);
                for (int j = 0; j < group; j++)
                {
                    Span<float> weights = scores.Slice((j * count) + first, tokens);
                    TensorPrimitives.Multiply(weights, valueScales, weights);
                }
            }

            AttentionPrimitives.WeightedSum(block.Values.AsSpan(head * tokensPerBlock * dim, tokens * dim), dim, scores[first..], count, group, output);
        }

        if (scheme.HasStaticValues)
        {
            ReadOnlySpan<float> valueScales = scheme.ValueScales.Slice(((layer * _options.KvHeads) + head) * dim, dim);
            for (int j = 0; j < group; j++)
            {
                TensorPrimitives.Multiply(output.Slice(j * dim, dim), valueScales, output.Slice(j * dim, dim));
            }
        }

        if (resident > 0)
        {
            AttentionPrimitives.WeightedSum(_windowValues.AsSpan(WindowOffset(layer, head, 0), resident * dim), dim, scores[quantized..], count, group, output);
        }
    }

    /// <summary>Asks for a KV head's keys (and their scales) or values of the block after <paramref name="block"/>, if there is one.</summary>
    private void PrefetchNext(int layer, int head, int block, bool keys)
    {
        if (block + 1 >= _blocks[layer].Count)
        {
            return;
        }

        KvCacheBlock next = _blocks[layer][block + 1];
        int rows = _options.BlockTokens * _options.HeadDim;
        AttentionPrimitives.Prefetch<sbyte>((keys ? next.Keys : next.Values).AsSpan(head * rows, rows));
        float[] scales = keys ? next.KeyScales : next.ValueScales;
        int perHead = scales.Length / _options.KvHeads;
        AttentionPrimitives.Prefetch<float>(scales.AsSpan(head * perHead, perHead));
    }

    /// <summary>Quantizes each query head (channel scales folded in) to int16 and gets the factor that turns its int dots into scores.</summary>
    private static void PrepareQueries(ReadOnlySpan<float> query, ReadOnlySpan<float> channelScales, float inverseSqrtDim, in AttentionScratch scratch, Span<float> factors)
    {
        int dim = query.Length / factors.Length;
        for (int j = 0; j < factors.Length; j++)
        {
            factors[j] = AttentionPrimitives.QuantizeQuery(query.Slice(j * dim, dim), channelScales, scratch.FloatQueries.Slice(j * dim, dim), scratch.Queries.Slice(j * dim, dim)) * inverseSqrtDim;
        }
    }

    /// <summary>scores[j, first + t] = dots[j, t] * factors[j] (* tokenScales[t] when there are per-token key scales).</summary>
    private static void ScaleDots(ReadOnlySpan<int> dots, int tokens, ReadOnlySpan<float> factors, ReadOnlySpan<float> tokenScales, Span<float> scores, int count, int first)
    {
        for (int j = 0; j < factors.Length; j++)
        {
            AttentionPrimitives.ScaleDots(dots.Slice(j * tokens, tokens), factors[j], tokenScales, scores.Slice((j * count) + first, tokens));
        }
    }

    private void Dequantize(int layer, int head, Span<float> destination, bool keys)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = GetCount(layer);
        KvCacheArguments.ValidateHeadRows(_options, layer, head, count, destination);
        KvCacheScheme scheme = _options.Scheme;
        int dim = _options.HeadDim, tokensPerBlock = _options.BlockTokens, quantized = _quantized[layer];
        int channel = ((layer * _options.KvHeads) + head) * dim;
        for (int t = 0; t < quantized; t++)
        {
            KvCacheBlock block = _blocks[layer][t / tokensPerBlock];
            int slot = t % tokensPerBlock;
            ReadOnlySpan<sbyte> row = (keys ? block.Keys : block.Values).AsSpan(((head * tokensPerBlock) + slot) * dim, dim);
            Span<float> target = destination.Slice(t * dim, dim);
            if (keys ? scheme.HasStaticKeys : scheme.HasStaticValues)
            {
                DequantizeRow(row, (keys ? scheme.KeyScales : scheme.ValueScales).Slice(channel, dim), target);
            }
            else if (keys && scheme.Kind == KvCacheSchemeKind.Kivi)
            {
                DequantizeRow(row, block.KeyScales.AsSpan(KeyGroupOffset(head, slot / scheme.GroupSize), dim), target);
            }
            else
            {
                QuantizationPrimitives.Dequantize(row, target, (keys ? block.KeyScales : block.ValueScales)[(head * tokensPerBlock) + slot]);
            }
        }

        int resident = count - quantized;
        if (resident > 0)
        {
            (keys ? _windowKeys : _windowValues).AsSpan(WindowOffset(layer, head, 0), resident * dim).CopyTo(destination[(quantized * dim)..]);
        }
    }

    /// <summary>Dequantizes a row with one scale per element: <c>q[d] * scales[d]</c>, the library's dequantize convention.</summary>
    private static void DequantizeRow(ReadOnlySpan<sbyte> row, ReadOnlySpan<float> scales, Span<float> destination)
    {
        for (int d = 0; d < row.Length; d++)
        {
            destination[d] = NumericConvention.Dequantize(row[d], scales[d], 0);
        }
    }

    /// <summary>The per-call buffers of <see cref="Attend"/>.</summary>
    private readonly ref struct AttentionScratch(Span<float> scores, Span<float> floatQueries, Span<short> queries, Span<int> dots)
    {
        public Span<float> Scores { get; } = scores;

        public Span<float> FloatQueries { get; } = floatQueries;

        public Span<short> Queries { get; } = queries;

        public Span<int> Dots { get; } = dots;
    }
}
