using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Quantization;

/// <summary>Per-tensor error and size of a quantization run, printable as a table and serialisable to JSON.</summary>
public sealed class QuantizationReport
{
    private readonly List<TensorErrorReport> _tensors = [];

    /// <summary>Gets the tensors, in the order they were added.</summary>
    public IReadOnlyList<TensorErrorReport> Tensors => _tensors;

    /// <summary>Gets the total size before quantization.</summary>
    public long BytesBefore => _tensors.Sum(t => t.BytesBefore);

    /// <summary>Gets the total size after quantization.</summary>
    public long BytesAfter => _tensors.Sum(t => t.BytesAfter);

    /// <summary>Adds a tensor's report.</summary>
    /// <param name="tensor">The report.</param>
    /// <exception cref="ArgumentNullException"><paramref name="tensor"/> is <see langword="null"/>.</exception>
    public void Add(TensorErrorReport tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        _tensors.Add(tensor);
    }

    /// <summary>Formats the report as a plain-text table with a total row.</summary>
    /// <returns>The table.</returns>
    public string ToTable()
    {
        int nameWidth = Math.Max(6, _tensors.Count == 0 ? 0 : _tensors.Max(t => t.Name.Length));
        StringBuilder table = new();
        table.AppendLine(CultureInfo.InvariantCulture, $"{"tensor".PadRight(nameWidth)}  {"elements",10}  {"SQNR dB",8}  {"cosine",9}  {"max |err|",10}  {"mean |err|",10}  {"bytes before",12}  {"bytes after",12}");
        foreach (TensorErrorReport t in _tensors)
        {
            table.AppendLine(CultureInfo.InvariantCulture, $"{t.Name.PadRight(nameWidth)}  {t.ElementCount,10}  {t.SqnrDb,8:F2}  {t.CosineSimilarity,9:F6}  {t.MaxAbsoluteError,10:E2}  {t.MeanAbsoluteError,10:E2}  {t.BytesBefore,12}  {t.BytesAfter,12}");
        }

        table.AppendLine(CultureInfo.InvariantCulture, $"{"total".PadRight(nameWidth)}  {_tensors.Sum(t => t.ElementCount),10}  {string.Empty,8}  {string.Empty,9}  {string.Empty,10}  {string.Empty,10}  {BytesBefore,12}  {BytesAfter,12}");
        return table.ToString();
    }

    /// <summary>Serialises the report to JSON: <c>{"bytesBefore", "bytesAfter", "tensors": [{"name", "elementCount", "sqnrDb", ...}]}</c>.</summary>
    /// <param name="indented">Whether to indent the output.</param>
    /// <returns>The JSON text. An infinite SQNR is written as <c>null</c>, which JSON numbers cannot express: +infinity when there is no
    /// error at all, -infinity when the original is all zeros and the restored values are not (see <see cref="TensorErrorReport.SqnrDb"/>).</returns>
    public string ToJson(bool indented = true)
    {
        using MemoryStream stream = new();
        using (Utf8JsonWriter json = new(stream, new JsonWriterOptions { Indented = indented }))
        {
            json.WriteStartObject();
            json.WriteNumber("bytesBefore", BytesBefore);
            json.WriteNumber("bytesAfter", BytesAfter);
            json.WriteStartArray("tensors");
            foreach (TensorErrorReport t in _tensors)
            {
                json.WriteStartObject();
                json.WriteString("name", t.Name);
                json.WriteNumber("elementCount", t.ElementCount);
                if (double.IsFinite(t.SqnrDb))
                {
                    json.WriteNumber("sqnrDb", t.SqnrDb);
                }
                else
                {
                    json.WriteNull("sqnrDb");
                }

                json.WriteNumber("cosineSimilarity", t.CosineSimilarity);
                json.WriteNumber("maxAbsoluteError", t.MaxAbsoluteError);
                json.WriteNumber("meanAbsoluteError", t.MeanAbsoluteError);
                json.WriteNumber("bytesBefore", t.BytesBefore);
                json.WriteNumber("bytesAfter", t.BytesAfter);
                json.WriteEndObject();
            }

            json.WriteEndArray();
            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray());
    }
}
