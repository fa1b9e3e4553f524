using System.Buffers;
using System.Runtime.InteropServices;

using static System.FormattableString;

namespace Quantization;

// Appending: quantizing a block of tokens (static or dynamic scales), the KIVI float window and its flush, growing a layer.
public sealed partial class Int8KvCache
{
    /// <summary>
    /// Static or dynamic: quantizes the block row by row ((token, KV head) rows of head dim) into scratch, rents the
    /// blocks it needs, then stores it. The quantize kernels report NaN or infinity as they go, so the data is read
    /// once; a rejected append changes nothing.
    /// </summary>
    private void AppendQuantized(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int dim = _options.HeadDim, heads = _options.KvHeads, width = _options.TokenWidth, rows = tokens * heads;
        sbyte[] quantized = ArrayPool<sbyte>.Shared.Rent(2 * tokens * width);
        float[] scales = ArrayPool<float>.Shared.Rent(2 * rows);
        try
        {
            Span<sbyte> qk = quantized.AsSpan(0, tokens * width), qv = quantized.AsSpan(tokens * width, tokens * width);
            Span<float> keyScales = scales.AsSpan(0, rows), valueScales = scales.AsSpan(rows, rows);
            bool staticKeys = _options.Scheme.HasStaticKeys, staticValues = _options.Scheme.HasStaticValues;
            bool keysFinite = staticKeys ? QuantizeChannels(keys, _options.Scheme.KeyScales.Slice(layer * width, width), qk) : QuantizeRows(keys, dim, qk, keyScales);
            bool valuesFinite = staticValues ? QuantizeChannels(values, _options.Scheme.ValueScales.Slice(layer * width, width), qv) : QuantizeRows(values, dim, qv, valueScales);
            if (!keysFinite || !valuesFinite)
            {
                QuantizationPrimitives.ThrowIfNonFinite(keys, Invariant($"keys (layer {layer})"), nameof(keys));
                QuantizationPrimitives.ThrowIfNonFinite(values, Invariant($"values (layer {layer})"), nameof(values));
            }

            int start = _quantized[layer];
            Grow(layer, start + tokens);
            for (int t = 0; t < tokens; t++)
            {
                for (int head = 0; head < heads; head++)
                {
                    int row = (t * heads) + head;
                    StoreRow(layer, start + t, head, qk.Slice(row * dim, dim), qv.Slice(row * dim, dim), staticKeys ? 0f : keyScales[row], staticValues ? 0f : valueScales[row]);
                }
            }

            _quantized[layer] = start + tokens;
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(quantized);
            ArrayPool<float>.Shared.Return(scales);
        }
    }

    /// <summary>
    /// Dynamic: quantizes each row of <paramref name="rowLength"/> with its own symmetric scale (the library's per-token
    /// scheme, the same bits as <see cref="QuantizationPrimitives.QuantizeDynamic(ReadOnlySpan{float}, ReadOnlySpan{int}, QuantizationScheme, Span{sbyte}, Span{float}, Span{sbyte}, string?)"/>);
    /// returns false when a row may hold NaN or an infinity.
    /// </summary>
    private static bool QuantizeRows(ReadOnlySpan<float> source, int rowLength, Span<sbyte> destination, Span<float> scales)
    {
        Span<byte> bytes = MemoryMarshal.AsBytes(destination);
        for (int row = 0; row < scales.Length; row++)
        {
            ReadOnlySpan<float> run = source.Slice(row * rowLength, rowLength);
            if (QuantizationPrimitives.MinMaxCore(run, out float min, out float max))
            {
                return false;
            }

            ScaleAndZeroPoint pair = PerTokenScheme.Convention.Compute(min, max, PerTokenScheme.QuantMin, PerTokenScheme.QuantMax, symmetric: true, out float factor, nameof(source));
            scales[row] = pair.Scale;
            QuantizationPrimitives.QuantizeLanes(PerTokenScheme.Convention, run, bytes.Slice(row * rowLength, rowLength), new UniformParameters(factor, 0), QuantizedType.Int8);
        }

        return true;
    }

    /// <summary>Static: quantizes [tokens, KV heads x head dim] with one (validated) scale per channel; returns false when the data may hold NaN or an infinity.</summary>
    private bool QuantizeChannels(ReadOnlySpan<float> source, ReadOnlySpan<float> channelScales, Span<sbyte> destination)
    {
        Span<byte> bytes = MemoryMarshal.AsBytes(destination);
        int width = channelScales.Length;
        for (int first = 0; first < source.Length; first += width)
        {
            if (QuantizationPrimitives.QuantizeLanes(NumericConvention.Onnx, source.Slice(first, width), bytes.Slice(first, width), new PerLaneParameters(channelScales, _channelZeroPoints), QuantizedType.Int8))
            {
                return false;
            }
        }

        return true;
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
}
