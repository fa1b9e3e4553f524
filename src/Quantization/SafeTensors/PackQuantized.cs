using System.Diagnostics;

namespace Quantization;

/// <summary>
/// compressed-tensors' <c>pack-quantized</c> layout of 4-bit weights (<c>compressors/pack_quantized/helpers.py</c>):
/// each value is stored as the unsigned code <c>q + 8</c> of its signed value <c>q</c> in [-8, 7], element i at bits
/// [4i, 4i + 4) of a little-endian stream of int32 words (eight a word, the first in the low bits), the last word of
/// a run zero-padded. The weight <c>W</c> [N, K] becomes <c>W_packed</c> int32 [N, ceil(K / 8)] packed along K,
/// <c>W_scale</c> in the weight's dtype, <c>W_zero_point</c> (asymmetric only) int32 [ceil(N / 8), groups] packed along
/// N in the same signed convention, and <c>W_shape</c> int64 [2] = {N, K}.
/// </summary>
/// <remarks>
/// The library's <see cref="QuantizedType.Int4"/> value q has code <c>q + 8</c>; its <see cref="QuantizedType.UInt4"/>
/// value u (and zero point) is the code itself, since compressed-tensors' signed value is <c>u - 8</c> and
/// <c>(q - z) * s</c> is the same in either convention.
/// </remarks>
internal static class PackQuantized
{
    /// <summary>The bits of one value.</summary>
    public const int Bits = 4;

    /// <summary>Values in one int32 word.</summary>
    public const int PerWord = 32 / Bits;

    /// <summary>The suffix of the packed data.</summary>
    public const string PackedSuffix = "_packed";

    /// <summary>The suffix of the scales (shared with int-quantized).</summary>
    public const string ScaleSuffix = "_scale";

    /// <summary>The suffix of the zero points (shared with int-quantized).</summary>
    public const string ZeroPointSuffix = "_zero_point";

    /// <summary>The suffix of the original shape.</summary>
    public const string ShapeSuffix = "_shape";

    /// <summary>The mask of one value.</summary>
    private const int Mask = (1 << Bits) - 1;

    /// <summary>The number of words that hold <paramref name="count"/> values.</summary>
    public static long WordCount(long count) => (count + PerWord - 1) / PerWord;

    /// <summary>The code of a quantized value of <paramref name="type"/>: <c>q + 8</c> for Int4, the value itself for UInt4.</summary>
    public static int CodeOffset(QuantizedType type) => -type.GetMinValue();

    /// <summary>Packs codes in [0, 15] into words, element i at bits [4i, 4i + 4); the padding bits are zero.</summary>
    public static void Pack(ReadOnlySpan<byte> codes, Span<int> words)
    {
        Debug.Assert(words.Length == WordCount(codes.Length), "One word per eight codes.");
        words.Clear();
        for (int i = 0; i < codes.Length; i++)
        {
            Debug.Assert(codes[i] <= Mask, "A code is four bits.");
            words[i / PerWord] |= codes[i] << (i % PerWord * Bits);
        }
    }

    /// <summary>Unpacks as many codes as <paramref name="codes"/> holds from words; padding bits are ignored, as the reference reader ignores them.</summary>
    public static void Unpack(ReadOnlySpan<int> words, Span<byte> codes)
    {
        Debug.Assert(words.Length == WordCount(codes.Length), "One word per eight codes.");
        for (int i = 0; i < codes.Length; i++)
        {
            codes[i] = (byte)((words[i / PerWord] >>> (i % PerWord * Bits)) & Mask);
        }
    }

    /// <summary>Packs a row-major [rows, columns] matrix of codes along its rows (axis 0) into [ceil(rows / 8), columns] words.</summary>
    public static int[] PackColumns(ReadOnlySpan<byte> codes, int rows, int columns)
    {
        Debug.Assert(codes.Length == (long)rows * columns, "A full matrix.");
        int[] words = new int[WordCount(rows) * columns];
        for (int row = 0; row < rows; row++)
        {
            for (int column = 0; column < columns; column++)
            {
                words[(row / PerWord * columns) + column] |= codes[(row * columns) + column] << (row % PerWord * Bits);
            }
        }

        return words;
    }

    /// <summary>Unpacks [ceil(rows / 8), columns] words packed along axis 0 into a row-major [rows, columns] matrix of codes.</summary>
    public static byte[] UnpackColumns(ReadOnlySpan<int> words, int rows, int columns)
    {
        Debug.Assert(words.Length == WordCount(rows) * columns, "One word per eight rows of each column.");
        byte[] codes = new byte[rows * columns];
        for (int row = 0; row < rows; row++)
        {
            for (int column = 0; column < columns; column++)
            {
                codes[(row * columns) + column] = (byte)((words[(row / PerWord * columns) + column] >>> (row % PerWord * Bits)) & Mask);
            }
        }

        return codes;
    }
}
